"""Training data from the aligned-face cache: split selection, label filters, class weights, batching and
batch-level augmentation (kornia). The cache and split files are read by the data layer's one reader each
(``datasets.cache.load_cache``, ``datasets.splits.read_split``), the labels' rules come from ``labels``.

Preprocessing contract (shared with export and inference): the model gets the aligned face at
``input_size`` as float32 NCHW RGB in [0, 255]. Inference aligns directly to ``input_size`` with the cache's
template and margin; here val/test faces are the S-sized cached crop resized to ``input_size`` with an
antialiased bilinear resize - the same face region, so the two differ only by resampling noise. Training
faces get the augmentation on the S-sized crop first and the same resize after.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..datasets.cache import FaceCache, row_sources
from ..datasets.errors import DataError
from ..datasets.splits import read_split
from ..labels import AGE_BANDS, AGE_GROUPS, FEMALE, MALE, age_band_indices, age_buckets, gender_codes
from .config import AugmentConfig, RunConfig


def _hash_split(keys: pd.Series, seed: int) -> pd.Series:
    """Deterministic 80/10/10 split by a hash of the key (used when a config has no split file)."""
    u = keys.map(lambda k: zlib.crc32(f"{seed}:{k}".encode()) / 2**32)
    return pd.Series(np.where(u < 0.8, "train", np.where(u < 0.9, "val", "test")), index=keys.index)


def split_rows(cache: FaceCache, cfg: RunConfig, split: str) -> np.ndarray:
    """Cache row numbers of one split after dropping unreadable faces and applying the label filters.

    Raises:
        DataError: the split file is missing or unusable (see ``read_split``), or no face is left.
    """
    idx = cache.index
    keys = idx["key"].astype(str)
    if cfg.data.split:
        assignment = keys.map(read_split(cfg.data.split))
    else:
        assignment = _hash_split(keys, cfg.train.seed)
    mask = cache.readable & (assignment == split)
    age = idx["age"].astype(float)
    gender = idx["gender"].astype(float)
    if cfg.data.age_range is not None:
        lo, hi = cfg.data.age_range
        mask &= age.between(lo, hi)
    # Keep faces with at least one label a loss uses; a missing label is masked out of its loss.
    mask &= (age.notna() & (cfg.loss.age > 0)) | (gender.notna() & cfg.heads.gender)
    rows = np.flatnonzero(mask.to_numpy())
    if len(rows) == 0:
        raise DataError(f"{cache.path}: no usable faces in split '{split}' (check the split file, its keys "
                        "and data.age_range)")
    return rows


def teacher_targets(cache: FaceCache, cfg: RunConfig, train_rows: np.ndarray) -> np.ndarray | None:
    """The ``[teacher]`` descriptors for every cache row (a relative path is inside ``data.cache``), or None;
    with ``teacher.centre`` minus the mean descriptor of the ``train_rows`` that have one.

    Raises:
        DataNotFoundError: the descriptors file does not exist.
        DataError: it does not have one (teacher.dim)-long row per cache face.
    """
    if not cfg.teacher.descriptors:
        return None
    from ..datasets.descriptors import load_descriptors

    path = Path(cfg.teacher.descriptors)
    path = path if path.is_absolute() else cache.path / path
    vectors = load_descriptors(path, len(cache.index))
    if vectors.shape[1] != cfg.teacher.dim:
        raise DataError(f"{path}: rows of {vectors.shape[1]} values, teacher.dim is {cfg.teacher.dim}")
    described = train_rows[~np.isnan(vectors[train_rows]).any(1)]
    if len(described) == 0:
        raise DataError(f"{path}: no training face has a descriptor (all NaN rows)")
    if cfg.teacher.centre:
        vectors = vectors - vectors[described].mean(0, dtype=np.float64).astype(np.float32)
    return vectors


def balanced_weights(labels: np.ndarray, classes: int) -> np.ndarray:
    """Per-class weights n / (k * count_k) over the known labels (sklearn's "balanced"); 0 if absent."""
    known = labels[labels >= 0]
    counts = np.bincount(known, minlength=classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(classes)
    weights[present] = len(known) / (present.sum() * counts[present])
    return weights


def per_dataset_gender_weights(genders: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Gender-loss weight of each face: within each dataset (``sources``), :func:`balanced_weights` over its
    men and women, so the two sexes weigh the same and the dataset's faces still weigh their count in total;
    faces of unknown gender 0 (they have no gender term). A dataset with one sex only keeps weight 1."""
    weights = np.zeros(len(genders))
    for source in np.unique(sources):
        mine = sources == source
        weights[mine] = np.where(genders[mine] >= 0, balanced_weights(genders[mine], 2)[np.maximum(genders[mine], 0)],
                                 0.0)
    return weights


def sampling_strata(ages: np.ndarray, races: pd.Series, sampler: str) -> tuple[np.ndarray, int]:
    """The stratum of each face a ``data.sampler`` balances over, -1 where a label it needs is unknown, and
    how many strata there are: "balanced" the five age buckets, "race_age" each race value x :data:`AGE_BANDS`
    (race values are the dataset's own names, e.g. UTKFace's "White" ... "Others"; NaN is unknown)."""
    buckets = age_buckets(ages)
    if sampler == "balanced":
        return buckets, len(AGE_GROUPS)
    if sampler != "race_age":
        raise ValueError(f"sampler {sampler!r} has no strata")
    # The evaluation's age-standardised MAE weighs the same bands, so the sampler evens out what it measures.
    band = age_band_indices(ages)
    race, names = pd.factorize(races, sort=True)  # -1 for NaN
    known = (buckets >= 0) & (race >= 0)
    return np.where(known, race * len(AGE_BANDS) + band, -1), max(len(names), 1) * len(AGE_BANDS)


def sampling_probabilities(strata: np.ndarray, count: int, power: float = 1.0) -> np.ndarray:
    """Draw probability of each face: proportional to (stratum size) ** -power, so power 1 gives every
    stratum the same share and 0.5 a square-root compromise that does not repeat a handful of faces from a
    tiny stratum thousands of times. Faces of unknown stratum get the known faces' average weight."""
    known = strata >= 0
    w = balanced_weights(strata, count)[np.maximum(strata, 0)] ** power
    w = np.where(known, w, w[known].mean() if known.any() else 1.0)
    return w / w.sum()


@dataclass
class Labels:
    age: Tensor  # float, NaN unknown
    gender: Tensor  # long, -1 unknown
    weight: Tensor  # per-sample age-loss weight
    teacher: Tensor | None = None  # float (N, D) descriptors, a NaN row unknown; None without a [teacher]
    gender_weight: Tensor | None = None  # per-sample gender-loss weight (data.gender_balance); None: all 1


class FaceBatches:
    """Batches of (uint8 NHWC faces, labels) from cache rows; the order depends only on (seed, epoch)."""

    def __init__(self, cache: FaceCache, rows: np.ndarray, batch_size: int, *, shuffle: bool,
                 seed: int = 0, sampler: str = "shuffle", sampler_power: float = 1.0, limit_batches: int = 0,
                 age_weights: np.ndarray | None = None, teacher: np.ndarray | None = None,
                 gender_balance: str = "none", child_gender_weight: float = 1.0):
        """``sampler``: "shuffle" (a permutation per epoch) or a balancing ``data.sampler`` ("balanced",
        "race_age": draws with replacement, see :func:`sampling_probabilities`); ``teacher``: (len(cache), D)
        descriptors for every cache row (``[teacher]``), or None; ``gender_balance``, ``child_gender_weight``: the
        ``data`` keys of those names."""
        self.cache, self.rows, self.batch_size = cache, rows, batch_size
        self.teacher = teacher
        self.shuffle, self.seed, self.limit_batches = shuffle, seed, limit_batches
        idx = cache.index.iloc[rows]
        self.ages = idx["age"].astype(float).to_numpy()
        self.genders = gender_codes(idx["gender"].astype(float).to_numpy())
        self.buckets = age_buckets(self.ages)
        self.draw_p: np.ndarray | None = None
        if sampler != "shuffle":
            races = idx["race"] if "race" in idx else pd.Series(np.nan, index=idx.index)
            self.draw_p = sampling_probabilities(*sampling_strata(self.ages, races, sampler), sampler_power)
        self.sample_weight = np.ones(len(rows))
        if age_weights is not None:
            self.sample_weight = np.where(self.buckets >= 0, age_weights[np.maximum(self.buckets, 0)], 0.0)
        self.gender_weight: np.ndarray | None = None
        self.sources = row_sources(idx)
        self.children = ~np.isnan(self.ages) & (age_band_indices(np.nan_to_num(self.ages)) == 0)
        if gender_balance == "per_dataset":
            self.gender_weight = per_dataset_gender_weights(self.genders, self.sources)
        if child_gender_weight != 1.0:
            base = self.gender_weight if self.gender_weight is not None else (self.genders >= 0).astype(float)
            self.gender_weight = np.where(self.children, base * child_gender_weight, base)

    def gender_weight_summary(self) -> str:
        """'UTKFace: men 7000 x0.96, women 6500 x1.04 (children 0-12: 1200, x2.00 of that); ...': the
        gender-loss weights (``data.gender_balance``, ``data.child_gender_weight``) for the log."""
        if self.gender_weight is None:
            return "none"
        parts = []
        for source in np.unique(self.sources):
            mine = self.sources == source
            by_sex = {sex: self.gender_weight[mine & (self.genders == code) & ~self.children]
                      for sex, code in (("men", MALE), ("women", FEMALE))}
            text = ", ".join(f"{sex} {len(w)} x{w[0]:.2f}" for sex, w in by_sex.items() if len(w))
            kids = mine & self.children & (self.genders >= 0)
            if kids.any():
                text += f" (and {int(kids.sum())} children 0-12)"
            parts.append(f"{source or '?'}: {text}")
        return "; ".join(parts)

    def __len__(self) -> int:
        n = -(-len(self.rows) // self.batch_size)
        return min(n, self.limit_batches) if self.limit_batches else n

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.rows))
        g = np.random.default_rng([self.seed, epoch])
        if self.draw_p is not None:
            return g.choice(len(self.rows), size=len(self.rows), replace=True, p=self.draw_p)
        return g.permutation(len(self.rows))

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Labels]]:
        order = self.order(epoch)
        for b in range(len(self)):
            yield self.batch_at(order[b * self.batch_size:(b + 1) * self.batch_size])

    def batch_at(self, pos: np.ndarray) -> tuple[Tensor, Labels]:
        """The faces and labels at positions ``pos`` of ``rows`` (also a rank's slice, training/distributed.py)."""
        rows = self.rows[pos]
        sort = np.argsort(rows, kind="stable")  # ascending reads from the memory map
        faces = np.empty((len(rows),) + self.cache.faces.shape[1:], dtype=np.uint8)
        faces[sort] = self.cache.faces[rows[sort]]
        return torch.from_numpy(faces), Labels(
            torch.from_numpy(self.ages[pos]).float(),
            torch.from_numpy(self.genders[pos]),
            torch.from_numpy(self.sample_weight[pos]).float(),
            None if self.teacher is None else torch.from_numpy(np.ascontiguousarray(self.teacher[rows])),
            None if self.gender_weight is None else torch.from_numpy(self.gender_weight[pos]).float(),
        )


def with_mirror(x: Tensor, labels: Labels) -> tuple[Tensor, Labels]:
    """The batch followed by its mirror image (flipped left to right), labels repeated: what a training step
    with ``loss.flip_consistency`` runs, so that :func:`.losses.flip_consistency` can pair row i with row
    i + N. The mirrored faces also train the task heads, like the augmentation's own flips."""
    def twice(t: Tensor | None) -> Tensor | None:
        return None if t is None else torch.cat([t, t])

    mirrored = Labels(torch.cat([labels.age, labels.age]), torch.cat([labels.gender, labels.gender]),
                      torch.cat([labels.weight, labels.weight]), twice(labels.teacher), twice(labels.gender_weight))
    return torch.cat([x, x.flip(-1)]), mirrored


def to_input(faces: Tensor, size: int, channels_last: bool = False) -> Tensor:
    """uint8 NHWC faces -> float32 NCHW in [0, 255] at ``size`` (antialiased bilinear); the eval path."""
    return to_input_float(faces.permute(0, 3, 1, 2).float(), size, channels_last)


class Augment(nn.Module):
    """Train-time augmentation on a float [0, 255] NCHW batch (before the resize to the input size)."""

    def __init__(self, cfg: AugmentConfig):
        super().__init__()
        import kornia.augmentation as K

        ops: list[nn.Module] = []
        if cfg.hflip > 0:
            ops.append(K.RandomHorizontalFlip(p=cfg.hflip))
        if cfg.rotation > 0 or cfg.translate > 0 or tuple(cfg.scale) != (1.0, 1.0):
            ops.append(K.RandomAffine(
                degrees=cfg.rotation,
                translate=(cfg.translate, cfg.translate) if cfg.translate > 0 else None,
                scale=(cfg.scale[0], cfg.scale[1]) if tuple(cfg.scale) != (1.0, 1.0) else None,
                padding_mode="reflection", p=1.0,
            ))
        b, c, s = list(cfg.brightness), list(cfg.contrast), list(cfg.saturation)
        if any(r != [1.0, 1.0] for r in (b, c, s)):
            # Multiplicative factor ranges (torchvision semantics); (1, 1) leaves that property alone.
            ops.append(K.ColorJitter(brightness=b, contrast=c, saturation=s, p=1.0))
        ops += capture_ops(cfg)
        # Quality ops last, as a camera/encoder would degrade the finished picture.
        if cfg.downscale > 0:
            ops.append(RandomDownscale(cfg.downscale, (cfg.downscale_range[0], cfg.downscale_range[1])))
        if cfg.blur > 0:
            lo, hi = cfg.blur_sigma
            k = 2 * int(np.ceil(3 * hi)) + 1  # kernel covers +-3 sigma of the widest blur
            ops.append(K.RandomGaussianBlur((k, k), (lo, hi), p=cfg.blur))
        if cfg.noise > 0:
            ops.append(RandomNoise(cfg.noise, (cfg.noise_std[0] / 255.0, cfg.noise_std[1] / 255.0)))
        if cfg.jpeg > 0:
            ops.append(K.RandomJPEG(jpeg_quality=(cfg.jpeg_quality[0], cfg.jpeg_quality[1]), p=cfg.jpeg))
        self.ops = nn.Sequential(*ops) if cfg.enabled else nn.Sequential()

    def forward(self, x: Tensor) -> Tensor:
        if len(self.ops) == 0:
            return x
        return self.ops(x / 255.0) * 255.0


#: ``augment.color_temperature``'s scale: kornia's black-body table (RandomPlanckianJitter) has a row every
#: 500 K from 3000 K to 15000 K.
PLANCKIAN_KELVIN = (3000.0, 500.0)


def planckian_rows(kelvin: tuple[float, float]) -> list[int]:
    """The rows of kornia's black-body table for a colour-temperature range, rounded to its 500 K steps."""
    first, step = PLANCKIAN_KELVIN
    return list(range(round((kelvin[0] - first) / step), round((kelvin[1] - first) / step) + 1))


def capture_ops(cfg: AugmentConfig) -> list[nn.Module]:
    """The capture-condition ops of ``cfg`` (light, colour cast, exposure, sensor noise), in the order a
    camera meets them; none when their probabilities are 0. All work on [0, 1] NCHW and clamp into it."""
    import kornia.augmentation as K

    ops: list[nn.Module] = []
    if cfg.light_gradient > 0:
        # Additive ramp over the whole picture from one edge (left, right, top or bottom); the sign is
        # drawn per image, so the lit side gets brighter or the far side falls into shadow.
        ops.append(K.RandomLinearIllumination(
            gain=(cfg.light_gradient_gain[0], cfg.light_gradient_gain[1]), sign=(-1.0, 1.0),
            p=cfg.light_gradient))
    if cfg.flash > 0:
        # Face crops are centred, so the flash's hot spot is too (within the middle 30 %), as wide as
        # 25-50 % of the crop; sign (0, 1) always brightens.
        ops.append(K.RandomGaussianIllumination(
            gain=(cfg.flash_gain[0], cfg.flash_gain[1]), center=(0.35, 0.65), sigma=(0.25, 0.5),
            sign=(0.0, 1.0), p=cfg.flash))
    if cfg.color_cast > 0:
        ops.append(K.RandomPlanckianJitter(
            mode="blackbody", select_from=planckian_rows((cfg.color_temperature[0], cfg.color_temperature[1])),
            p=cfg.color_cast))
    if cfg.exposure > 0:
        ops.append(K.RandomGamma(gamma=(cfg.exposure_gamma[0], cfg.exposure_gamma[1]),
                                 gain=(cfg.exposure_gain[0], cfg.exposure_gain[1]), p=cfg.exposure))
    if cfg.sensor_noise > 0:
        ops.append(RandomSensorNoise(cfg.sensor_noise, (cfg.sensor_shot[0] / 255.0, cfg.sensor_shot[1] / 255.0),
                                     (cfg.sensor_read[0] / 255.0, cfg.sensor_read[1] / 255.0)))
    return ops


class RandomDownscale(nn.Module):
    """Shrink chosen images by a random factor and enlarge them back: the detail a small or distant face
    has. Works on [0, 1] NCHW; each chosen image gets its own factor."""

    def __init__(self, p: float, factor: tuple[float, float]):
        super().__init__()
        self.p, self.factor = p, factor

    def forward(self, x: Tensor) -> Tensor:
        chosen = torch.rand(x.shape[0]) < self.p
        if not bool(chosen.any()):
            return x
        factors = torch.empty(x.shape[0]).uniform_(*self.factor)
        out = x.clone()
        h, w = x.shape[-2:]
        for i in torch.nonzero(chosen).flatten().tolist():
            f = float(factors[i])
            small = F.interpolate(x[i:i + 1], size=(max(4, round(h * f)), max(4, round(w * f))),
                                  mode="bilinear", antialias=True, align_corners=False)
            out[i:i + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        return out


class RandomNoise(nn.Module):
    """Additive Gaussian noise on chosen images of a [0, 1] NCHW batch, each with its own std."""

    def __init__(self, p: float, std: tuple[float, float]):
        super().__init__()
        self.p, self.std = p, std

    def forward(self, x: Tensor) -> Tensor:
        chosen = (torch.rand(x.shape[0]) < self.p).to(x.dtype)
        std = torch.empty(x.shape[0]).uniform_(*self.std).to(x.dtype) * chosen  # drawn on the CPU's stream
        return (x + torch.randn_like(x) * std.to(x.device).view(-1, 1, 1, 1)).clamp(0.0, 1.0)


class RandomSensorNoise(nn.Module):
    """Signal-dependent sensor noise on chosen images of a [0, 1] NCHW batch: Gaussian, independent per pixel
    and channel, with variance ``shot ** 2 * x + read ** 2`` (the Poisson-Gaussian model of a raw sensor:
    photon shot noise grows with the light, read noise is a floor). ``shot`` and ``read`` are drawn per image
    from their ranges (std at white and the floor, [0, 1] scale)."""

    def __init__(self, p: float, shot: tuple[float, float], read: tuple[float, float]):
        super().__init__()
        self.p, self.shot, self.read = p, shot, read

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        # Parameters drawn on the CPU's stream, as RandomNoise; the noise only for the chosen images (the
        # op is on for a few of them, and a whole batch of randn and sqrt costs more than the rest together).
        chosen = torch.rand(n) < self.p
        shot, read = torch.empty(n).uniform_(*self.shot), torch.empty(n).uniform_(*self.read)
        if not bool(chosen.any()):
            return x
        idx = torch.nonzero(chosen).flatten()
        sub = x[idx.to(x.device)]
        shot = shot[idx].to(x.device, x.dtype).view(-1, 1, 1, 1)
        read = read[idx].to(x.device, x.dtype).view(-1, 1, 1, 1)
        std = (shot.square() * sub.clamp(0.0, 1.0) + read.square()).sqrt()
        out = x.clone()
        out[idx.to(x.device)] = (sub + torch.randn_like(sub) * std).clamp(0.0, 1.0)
        return out


def train_input(faces: Tensor, augment: Augment, size: int, channels_last: bool) -> Tensor:
    """uint8 NHWC -> augmented float32 NCHW [0, 255] at ``size``."""
    with torch.no_grad():
        x = augment(faces.permute(0, 3, 1, 2).float())
    return to_input_float(x, size, channels_last)


def to_input_float(x: Tensor, size: int, channels_last: bool) -> Tensor:
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = x.clamp(0, 255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
