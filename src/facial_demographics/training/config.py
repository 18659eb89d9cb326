"""Run configuration: one TOML file describes a training run completely.

Configs are plain dataclasses filled from TOML by a small validator, so a typo or a bad value fails
before any compute starts, with an error naming the key (``optim.lr: must be > 0``).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

AGE_HEADS = ("distribution", "mean_variance", "buckets5", "regression")
# dlib_resnet: issue 33, needs the teacher extra; efficientnet_lite1/2: issue 33 (larger backbones)
MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "seed_cnn", "dlib_resnet")
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
INITS = ("torch", "keras")
SCHEDULES = ("cosine", "step", "onecycle", "constant")
TEACHER_LOSSES = ("cosine", "mse")
SELECT_METRICS = {  # metric -> True when larger is better
    "val_mae": False,
    "val_loss": False,
    "val_cs5": True,
    "val_bucket_acc": True,
    "val_gender_acc": True,
}


class ConfigError(UserError, ValueError):
    """A config key is unknown, has the wrong type or a bad value; the message names the key."""


@dataclass
class DataConfig:
    cache: str = "cache/utkface-112"  # aligned-face cache dir (relative paths: to the working directory)
    split: str | None = "splits/utkface.csv"  # CSV key,split; None: deterministic 80/10/10 by key hash
    input_size: int = 112
    age_range: list[float] | None = None  # [lo, hi] inclusive filter on the label, e.g. [21, 75]
    class_weights: str = "none"  # "none" | "balanced" (inverse frequency, sklearn's formula)
    # "shuffle" | "balanced" (age buckets) | "race_age" (race x age band): balanced draws with replacement
    sampler: str = "shuffle"
    sampler_power: float = 1.0  # draw weight (stratum size) ** -power: 1 fully balanced, 0.5 square-root
    # "none" | "per_dataset": in the gender term, each dataset's (cache ``source``) men and women weigh the
    # same in total, and each dataset as much as its faces. MORPH is 85 % men; unweighted, mixing it in moves
    # the gender prior, which decides the faces the network cannot read (young children).
    gender_balance: str = "none"
    # Gender-loss weight of children (labels.AGE_BANDS[0], 0-12), on top of gender_balance. Their sex is the
    # hardest to read; mixing in MORPH's adults cost UTKFace's children 4 points of gender accuracy twice.
    child_gender_weight: float = 1.0
    limit_batches: int = 0  # >0: at most this many train batches per epoch (quick runs)
    limit_val: int = 0  # >0: evaluate on at most this many val faces


@dataclass
class ModelConfig:
    name: str = "efficientnet_lite0"
    pretrained: bool = True  # efficientnet_lite*: ImageNet weights; dlib_resnet: dlib's face-recognition weights
    dropout: float = 0.2  # before the head layers
    drop_connect: float = 0.2  # stochastic depth (efficientnet_lite*)
    spatial_dropout: float = 0.2  # Dropout2d after the later separable convs (seed_cnn)
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128, 256])  # seed_cnn trunk widths
    hidden: int = 128  # seed_cnn FC width per head
    batchnorm: bool = True  # seed_cnn: BatchNorm after each separable conv
    # seed_cnn weight init: "torch" (kaiming-uniform a=sqrt(5), torch's layer default) or "keras"
    # (glorot_uniform kernels and zero biases, the Keras default for SeparableConv2D and Dense)
    init: str = "torch"


@dataclass
class HeadsConfig:
    age: str = "distribution"
    gender: bool = True
    max_age: int = 100  # distribution heads cover ages 0..max_age


@dataclass
class LossConfig:
    age: float = 1.0  # multi-task weights
    gender: float = 1.0
    sigma: float = 2.0  # label-distribution Gaussian width (years)
    expectation_l1: float = 0.0  # extra L1 on the expected age (DLDL-v2 style)
    mean_weight: float = 0.2  # mean-variance loss terms
    variance_weight: float = 0.05
    label_smoothing: float = 0.0  # classification heads (gender, buckets5)
    # > 0: every batch also runs mirrored, and the age distributions (and gender) of a face and its mirror
    # image are pulled together by this weight x their symmetric KL divergence (issue 33): a network that
    # answers the same for both needs no flip TTA, which doubles inference cost today.
    flip_consistency: float = 0.0


@dataclass
class AugmentConfig:
    enabled: bool = True  # train only; val/test are never augmented
    hflip: float = 0.5  # probability
    rotation: float = 0.0  # degrees, uniform in [-r, r]
    translate: float = 0.0  # fraction of the side, both axes
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # zoom range
    brightness: list[float] = field(default_factory=lambda: [1.0, 1.0])  # multiplicative
    contrast: list[float] = field(default_factory=lambda: [1.0, 1.0])
    saturation: list[float] = field(default_factory=lambda: [1.0, 1.0])
    # Image-quality augmentations (probabilities; 0 = off). UTKFace is uniformly JPEG-compressed, so a model
    # trained on it alone learns its artefacts and can flip on clean, blurred or low-resolution photos.
    blur: float = 0.0
    blur_sigma: list[float] = field(default_factory=lambda: [0.3, 1.5])  # Gaussian sigma, pixels
    jpeg: float = 0.0
    jpeg_quality: list[float] = field(default_factory=lambda: [30.0, 95.0])
    downscale: float = 0.0  # shrink by a factor in downscale_range, then enlarge back
    downscale_range: list[float] = field(default_factory=lambda: [0.35, 0.9])
    noise: float = 0.0  # additive Gaussian sensor noise, std drawn per image from noise_std (0..255 scale)
    noise_std: list[float] = field(default_factory=lambda: [2.0, 12.0])
    # Capture conditions (issue 33; probabilities, 0 = off). UTKFace is mostly soft, even, white-balanced
    # web portraits; mugshots and ID photos have a hard frontal flash, one-sided or overhead light, blown
    # highlights, tungsten/fluorescent casts and cheap-sensor noise. They run after the colour jitter and
    # before the quality ops (light and sensor first, then the encoder).
    light_gradient: float = 0.0  # one-sided light: an additive ramp from one edge, darker or brighter
    light_gradient_gain: list[float] = field(default_factory=lambda: [0.05, 0.25])  # ramp height, 0..1 scale
    flash: float = 0.0  # frontal flash hot spot: a wide Gaussian brightening centred on the face
    flash_gain: list[float] = field(default_factory=lambda: [0.05, 0.25])  # peak brightening, 0..1 scale
    exposure: float = 0.0  # camera response: gain * x ** gamma, clipped (gain > 1 blows out highlights)
    exposure_gamma: list[float] = field(default_factory=lambda: [0.6, 1.1])
    exposure_gain: list[float] = field(default_factory=lambda: [1.0, 1.4])
    color_cast: float = 0.0  # white balance set for another light: a black-body illuminant's tint
    # Kelvin, 3000..15000 in 500 K steps. 6500 K is about neutral; 4500 K's red/blue tilt is about 1.7x
    # 9000 K's the other way (indoor light's warm casts are the strong ones).
    color_temperature: list[float] = field(default_factory=lambda: [4500.0, 9000.0])
    # Sensor noise that grows with the signal (photon shot noise) over a floor (read noise), per channel:
    # std(x) = sqrt(shot ** 2 * x + read ** 2) on 0..255, x the [0, 1] value; the ``noise`` op's is flat.
    sensor_noise: float = 0.0
    sensor_shot: list[float] = field(default_factory=lambda: [3.0, 12.0])  # shot-noise std at white
    sensor_read: list[float] = field(default_factory=lambda: [0.5, 3.0])  # noise floor std


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd (Keras' SGD default is 0)
    eps: float = 1e-8  # adam/adamw/rmsprop denominator epsilon (torch's default; Keras uses 1e-7)
    rho: float = 0.99  # rmsprop squared-gradient decay (torch's alpha default; Keras' rho is 0.9)
    grad_clip: float = 0.0  # >0: clip the global grad norm


@dataclass
class ScheduleConfig:
    name: str = "cosine"
    warmup_epochs: float = 0.0  # cosine: linear warm-up
    min_lr_ratio: float = 0.01  # cosine: final lr / lr
    step_epochs: int = 5  # step: multiply by gamma every step_epochs epochs
    gamma: float = 0.5
    pct_start: float = 0.3  # onecycle


#: Training arithmetic: plain fp32, or bfloat16 autocast (``train.precision``).
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 128
    seed: int = 0
    ema: bool = False  # keep an exponential moving average of the weights; eval/export use it
    ema_decay: float = 0.999
    tta_flip: bool = False  # average logits over the image and its mirror at eval and in the export
    threads: int = 2
    channels_last: bool = True
    # "fp32", or "bf16": forward and backward under torch.autocast in bfloat16 (weights, optimiser and
    # validation stay fp32). On CPUs with AVX512-BF16 the seed network's training step ran 1.45x faster.
    precision: str = "fp32"
    select: str = "val_mae"  # metric choosing best.pt
    # Fine-tuning: the first round starts from these weights instead of model.pretrained's: a training
    # checkpoint (.pt, its EMA weights) or an fp32 bundle, by registry name or directory (training/unfold.py
    # rebuilds the network and its BatchNorms from the graph). "" = off.
    start_from: str = ""


@dataclass
class TeacherConfig:
    """A training-time teacher (issue 15): an auxiliary linear head on the pooled features regresses a
    precomputed descriptor per face (``data descriptors``); it adds to the training loss only and is not
    exported, so inference stays one network with the same outputs."""

    descriptors: str = ""  # "" = off; a .npy of (N, dim) rows for the cache's N faces, relative to data.cache
    weight: float = 0.0  # the auxiliary term's weight in the training loss
    loss: str = "cosine"  # "cosine": 1 - cos; "mse": squared Euclidean distance of the raw vectors (dlib's)
    dim: int = 128  # descriptor length (dlib's face-recognition ResNet: 128)
    # Subtract the train faces' mean descriptor first. dlib's descriptors share one large common part (a
    # descriptor's cosine with the mean direction is about 0.91 on UTKFace), so uncentred, a head that
    # outputs the mean already scores a cosine loss of 0.09 and what tells faces apart is a small remainder.
    centre: bool = True


@dataclass
class RoundConfig:
    """One training round; later rounds start from an earlier round's checkpoint with a fresh optimiser."""

    name: str = ""
    epochs: int | None = None  # default: train.epochs
    lr: float | None = None  # default: optim.lr
    init_from: str = "best"  # "best" | "last" checkpoint of the previous round


@dataclass
class RunConfig:
    name: str = "run"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    rounds: list[RoundConfig] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def round_plan(self) -> list[RoundConfig]:
        """The rounds to run, with epochs and lr filled in (a config without rounds is one round)."""
        rounds = self.rounds or [RoundConfig()]
        return [
            RoundConfig(
                name=r.name or f"round{i + 1}",
                epochs=r.epochs if r.epochs is not None else self.train.epochs,
                lr=r.lr if r.lr is not None else self.optim.lr,
                init_from=r.init_from,
            )
            for i, r in enumerate(rounds)
        ]


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against a field annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(key, value, arg)
            except ConfigError:
                pass
        names = " or ".join("none" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
        raise ConfigError(f"{key}: expected {names}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{key}: unknown key (allowed: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)  # type: ignore[arg-type]
        elif name == "rounds":
            if not isinstance(value, list):
                raise ConfigError(f"{key}: expected an array of tables ([[rounds]])")
            kwargs[name] = [_build(RoundConfig, v, f"{key}[{i}]") for i, v in enumerate(value)]
        else:
            kwargs[name] = _check_type(key, value, tp)
    return cls(**kwargs)


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _check_range(key: str, pair: list[float] | None, lo_min: float = 0.0, hi_max: float | None = None) -> None:
    if pair is None:
        return
    _require(len(pair) == 2, key, "must be [low, high]")
    _require(lo_min <= pair[0] <= pair[1], key, f"must satisfy {lo_min} <= low <= high")
    if hi_max is not None:
        _require(pair[1] <= hi_max, key, f"must be within [{lo_min:g}, {hi_max:g}]")


def validate(cfg: RunConfig) -> RunConfig:
    """Check values and their combinations; raises ConfigError naming the first bad key."""
    d, m, h, lo, a, o, s, t = (cfg.data, cfg.model, cfg.heads, cfg.loss, cfg.augment, cfg.optim,
                               cfg.schedule, cfg.train)
    _require(bool(cfg.name.strip()), "name", "must not be empty")
    _require(bool(d.cache), "data.cache", "must not be empty")
    _require(16 <= d.input_size <= 1024, "data.input_size", "must be in 16..1024")
    _check_range("data.age_range", d.age_range)
    _require(d.class_weights in ("none", "balanced"), "data.class_weights", "must be 'none' or 'balanced'")
    _require(d.sampler in ("shuffle", "balanced", "race_age"), "data.sampler",
             "must be 'shuffle', 'balanced' or 'race_age'")
    _require(0 < d.sampler_power <= 1, "data.sampler_power", "must be in (0, 1]")
    _require(d.gender_balance in ("none", "per_dataset"), "data.gender_balance", "must be 'none' or 'per_dataset'")
    _require(0 < d.child_gender_weight <= 10, "data.child_gender_weight", "must be in (0, 10]")
    _require(d.limit_batches >= 0, "data.limit_batches", "must be >= 0")
    _require(d.limit_val >= 0, "data.limit_val", "must be >= 0")
    _require(t.precision in PRECISIONS, "train.precision", f"must be one of {', '.join(PRECISIONS)}")
    _require(m.name in MODELS, "model.name", f"must be one of {', '.join(MODELS)}")
    for key, p in (("model.dropout", m.dropout), ("model.drop_connect", m.drop_connect),
                   ("model.spatial_dropout", m.spatial_dropout)):
        _require(0.0 <= p < 1.0, key, "must be in [0, 1)")
    _require(len(m.channels) >= 1 and all(c > 0 for c in m.channels), "model.channels",
             "must be a non-empty list of positive widths")
    _require(m.hidden > 0, "model.hidden", "must be > 0")
    _require(m.init in INITS, "model.init", f"must be one of {', '.join(INITS)}")
    _require(h.age in AGE_HEADS, "heads.age", f"must be one of {', '.join(AGE_HEADS)}")
    _require(1 <= h.max_age <= 150, "heads.max_age", "must be in 1..150")
    _require(lo.age >= 0 and lo.gender >= 0 and lo.age + lo.gender > 0, "loss.age",
             "loss weights must be >= 0 and not all zero")
    _require(lo.sigma > 0, "loss.sigma", "must be > 0")
    for key, w in (("loss.expectation_l1", lo.expectation_l1), ("loss.mean_weight", lo.mean_weight),
                   ("loss.variance_weight", lo.variance_weight)):
        _require(w >= 0, key, "must be >= 0")
    _require(0.0 <= lo.label_smoothing < 1.0, "loss.label_smoothing", "must be in [0, 1)")
    _require(lo.flip_consistency >= 0, "loss.flip_consistency", "must be >= 0")
    _require(lo.flip_consistency == 0 or h.age != "regression", "loss.flip_consistency",
             "needs an age head with a distribution (not regression)")
    _require(h.gender or lo.age > 0, "loss.age", "must be > 0 when there is no gender head")
    _require(0.0 <= a.hflip <= 1.0, "augment.hflip", "must be a probability in [0, 1]")
    _require(0.0 <= a.rotation <= 180.0, "augment.rotation", "must be in [0, 180] degrees")
    _require(0.0 <= a.translate < 1.0, "augment.translate", "must be in [0, 1)")
    _check_range("augment.scale", a.scale, lo_min=1e-3)
    _check_range("augment.brightness", a.brightness)
    _check_range("augment.contrast", a.contrast)
    _check_range("augment.saturation", a.saturation)
    for key in ("blur", "jpeg", "downscale", "noise"):
        _require(0.0 <= getattr(a, key) <= 1.0, f"augment.{key}", "must be a probability in [0, 1]")
    _check_range("augment.blur_sigma", a.blur_sigma, lo_min=1e-3)
    _check_range("augment.jpeg_quality", a.jpeg_quality, lo_min=1.0, hi_max=100.0)
    _check_range("augment.downscale_range", a.downscale_range, lo_min=0.05, hi_max=1.0)
    _check_range("augment.noise_std", a.noise_std)
    for key in ("light_gradient", "flash", "exposure", "color_cast", "sensor_noise"):
        _require(0.0 <= getattr(a, key) <= 1.0, f"augment.{key}", "must be a probability in [0, 1]")
    _check_range("augment.light_gradient_gain", a.light_gradient_gain, hi_max=1.0)  # kornia's gain bounds
    _check_range("augment.flash_gain", a.flash_gain, hi_max=1.0)
    _check_range("augment.exposure_gamma", a.exposure_gamma, lo_min=0.1, hi_max=10.0)
    _check_range("augment.exposure_gain", a.exposure_gain, lo_min=0.1, hi_max=10.0)
    _check_range("augment.color_temperature", a.color_temperature, lo_min=3000.0, hi_max=15000.0)
    _check_range("augment.sensor_shot", a.sensor_shot, hi_max=255.0)
    _check_range("augment.sensor_read", a.sensor_read, hi_max=255.0)
    _require(o.name in OPTIMIZERS, "optim.name", f"must be one of {', '.join(OPTIMIZERS)}")
    _require(o.lr > 0, "optim.lr", "must be > 0")
    _require(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _require(0 <= o.momentum < 1, "optim.momentum", "must be in [0, 1)")
    _require(o.grad_clip >= 0, "optim.grad_clip", "must be >= 0")
    _require(o.eps > 0, "optim.eps", "must be > 0")
    _require(0 < o.rho < 1, "optim.rho", "must be in (0, 1)")
    _require(s.name in SCHEDULES, "schedule.name", f"must be one of {', '.join(SCHEDULES)}")
    _require(s.warmup_epochs >= 0, "schedule.warmup_epochs", "must be >= 0")
    _require(0 <= s.min_lr_ratio <= 1, "schedule.min_lr_ratio", "must be in [0, 1]")
    _require(s.step_epochs >= 1, "schedule.step_epochs", "must be >= 1")
    _require(0 < s.gamma <= 1, "schedule.gamma", "must be in (0, 1]")
    _require(0 < s.pct_start < 1, "schedule.pct_start", "must be in (0, 1)")
    _require(t.epochs >= 1, "train.epochs", "must be >= 1")
    _require(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    _require(t.eval_batch_size >= 1, "train.eval_batch_size", "must be >= 1")
    _require(0 < t.ema_decay < 1, "train.ema_decay", "must be in (0, 1)")
    _require(t.threads >= 1, "train.threads", "must be >= 1")
    _require(t.select in SELECT_METRICS, "train.select", f"must be one of {', '.join(SELECT_METRICS)}")
    _require(t.select != "val_gender_acc" or h.gender, "train.select", "val_gender_acc needs a gender head")
    _validate_teacher(cfg.teacher)
    for i, r in enumerate(cfg.rounds):
        _require(r.epochs is None or r.epochs >= 1, f"rounds[{i}].epochs", "must be >= 1")
        _require(r.lr is None or r.lr > 0, f"rounds[{i}].lr", "must be > 0")
        _require(r.init_from in ("best", "last"), f"rounds[{i}].init_from", "must be 'best' or 'last'")
    names = [r.name for r in cfg.round_plan()]
    _require(len(set(names)) == len(names), "rounds", "round names must be unique")
    return cfg


def _validate_teacher(te: TeacherConfig) -> None:
    _require(te.loss in TEACHER_LOSSES, "teacher.loss", f"must be one of {', '.join(TEACHER_LOSSES)}")
    _require(te.weight >= 0, "teacher.weight", "must be >= 0")
    _require(te.dim >= 1, "teacher.dim", "must be >= 1")
    _require(not te.descriptors or te.weight > 0, "teacher.weight", "must be > 0 when teacher.descriptors is set")
    _require(bool(te.descriptors) or te.weight == 0, "teacher.descriptors",
             "must name the descriptors file when teacher.weight > 0")


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from a plain dict (a parsed TOML file or a checkpoint's copy)."""
    return validate(_build(RunConfig, raw, ""))


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, else a packaged config by name (``default``, ``configs/seed.toml``)."""
    p = Path(path)
    if p.is_file():
        return p
    stem = p.name if p.suffix == ".toml" else f"{p.name}.toml"
    packaged = resources.files("facial_demographics") / "configs" / stem
    if packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(f"{path}: config file not found (also looked for packaged configs/{stem})")


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: tables merge key by key, everything else (arrays too) is replaced."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_raw(path: str | Path, seen: tuple[Path, ...] = ()) -> tuple[Path, dict[str, Any]]:
    """Parse a TOML config; a top-level ``base = "NAME"`` inherits another config (variants stay short)."""
    p = resolve_config_path(path)
    if p.resolve() in seen:
        raise ConfigError(f"{p}: base configs form a cycle")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
    base = raw.pop("base", None)
    if base is None:
        return p, raw
    if not isinstance(base, str):
        raise ConfigError(f"{p}: base: must be a config name or path")
    sibling = p.parent / (base if base.endswith(".toml") else f"{base}.toml")
    _, parent = _read_raw(sibling if sibling.is_file() else base, (*seen, p.resolve()))
    return p, _merge(parent, raw)


def load_config(path: str | Path) -> RunConfig:
    """Read, parse and validate a TOML run config (following ``base`` inheritance)."""
    p, raw = _read_raw(path)
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc


def with_overrides(cfg: RunConfig, *, lr: float | None = None, epochs: int | None = None,
                   cache: str | Path | None = None, split: str | Path | None = None,
                   precision: str | None = None) -> RunConfig:
    """A copy with command-line overrides applied (and validated)."""
    new = dataclasses.replace(cfg)
    raw = new.to_dict()
    if precision is not None:
        raw["train"]["precision"] = precision
    if lr is not None:
        raw["optim"]["lr"] = lr
    if epochs is not None:
        raw["train"]["epochs"] = epochs
        for r in raw["rounds"]:
            r["epochs"] = None
    if cache is not None:
        raw["data"]["cache"] = str(cache)
    if split is not None:
        raw["data"]["split"] = str(split)
    return config_from_dict(_drop_none_rounds(raw))


def _drop_none_rounds(raw: dict[str, Any]) -> dict[str, Any]:
    raw["rounds"] = [{k: v for k, v in r.items() if v is not None} for r in raw["rounds"]]
    return raw
