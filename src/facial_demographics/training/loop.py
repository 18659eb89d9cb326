"""The training loop: epochs over the cache, validation metrics, learning curves and resumable checkpoints.

Each epoch ends with val metrics appended to ``metrics.csv``/``metrics.json``, curves redrawn and
``last.pt`` written atomically (model, optimiser, scheduler, EMA, RNG states, config); ``best.pt`` is a
copy of the best epoch by ``train.select``. So a killed run loses at most the epoch in progress, and
``resume`` continues at the next epoch with the same global step and learning rate.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..types import AGE_GROUPS
from . import distributed as ddp_hooks  # DDP hooks (training/distributed.py): identity in one process
from .config import SELECT_METRICS, RoundConfig, RunConfig, config_from_dict
from .data import (
    Augment,
    FaceBatches,
    FaceCache,
    age_buckets,
    balanced_weights,
    load_cache,
    split_rows,
    to_input,
    train_input,
)
from .losses import MultiTaskLoss, expected_age
from .models import AgeGenderNet, HeadSpec, build_model, count_parameters, head_spec

CHECKPOINT_FORMAT = 1
METRIC_COLUMNS = ("round", "epoch", "global_step", "lr", "train_loss", "train_age_loss", "train_gender_loss",
                  "val_loss", "val_mae", "val_cs5", "val_bucket_acc", "val_gender_acc", "images_per_s",
                  "epoch_seconds")
Log = Callable[[str], None]


class StopTraining(Exception):
    """Raise from an ``on_epoch_end`` callback to stop after the epoch's checkpoint is written."""


@dataclass
class EpochState:
    round_name: str
    epoch: int  # epochs completed in this round
    global_step: int
    metrics: dict[str, float]
    run_dir: Path


@dataclass
class StepState:
    """One optimiser step, with the global batch's mean losses (for a per-step loss curve)."""

    round_name: str
    epoch: int  # the epoch in progress, from 1
    global_step: int
    lr: float
    loss: float
    age_loss: float
    gender_loss: float
    images: int


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    images_per_s: float = 0.0


def _print(msg: str) -> None:
    print(msg, flush=True)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same directory, then os.replace (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: RunConfig, lr: float) -> torch.optim.Optimizer:
    """Weight decay on conv/linear weights only (not on norms and biases)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optim.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if cfg.optim.name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.optim.momentum, nesterov=cfg.optim.momentum > 0)


def make_scheduler(opt: torch.optim.Optimizer, cfg: RunConfig, lr: float, steps_per_epoch: int,
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedules, so a resumed run continues mid-curve at exactly the same lr."""
    s = cfg.schedule
    if s.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total_steps, 2),
                                                   pct_start=s.pct_start)
    if s.name == "step":
        def factor(step: int) -> float:
            return float(s.gamma ** ((step // steps_per_epoch) // s.step_epochs))
    elif s.name == "cosine":
        warmup = int(round(s.warmup_epochs * steps_per_epoch))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    else:
        def factor(step: int) -> float:
            return 1.0
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def eval_model(model: AgeGenderNet, ema: AveragedModel | None) -> AgeGenderNet:
    """The weights that are evaluated, selected and exported: the EMA copy when there is one."""
    return ema.module if ema is not None else model  # type: ignore[return-value]


def predict_logits(model: AgeGenderNet, x: Tensor, tta_flip: bool) -> tuple[Tensor, Tensor | None]:
    age, gender = model(x)
    if tta_flip:
        age_f, gender_f = model(x.flip(-1))
        age = (age + age_f) / 2
        gender = (gender + gender_f) / 2 if gender is not None and gender_f is not None else None
    return age, gender


@torch.no_grad()
def evaluate(model: AgeGenderNet, batches: FaceBatches, spec: HeadSpec, loss_fn: MultiTaskLoss,
             size: int, tta_flip: bool = False, channels_last: bool = False) -> dict[str, float]:
    """Val loss, age MAE, CS@5, 5-bucket accuracy and gender accuracy over all batches."""
    was_training = model.training
    model.eval()
    preds, ages, g_pred, g_true, losses, counts = [], [], [], [], [], []
    age_bucket_hits: list[np.ndarray] = []
    for faces, labels in batches.epoch(0):
        age_logits, gender_logits = predict_logits(model, to_input(faces, size, channels_last), tta_flip)
        losses.append(float(loss_fn(age_logits, gender_logits, labels).total))
        counts.append(len(faces))
        known = ~torch.isnan(labels.age)
        pred = expected_age(age_logits, spec)
        preds.append(pred[known].numpy())
        ages.append(labels.age[known].numpy())
        if spec.age_type == "buckets5":
            true_b = age_buckets(labels.age[known].numpy().astype(np.float64))
            age_bucket_hits.append(age_logits[known].argmax(1).numpy() == true_b)
        if gender_logits is not None:
            gk = labels.gender >= 0
            g_pred.append(gender_logits[gk].argmax(1).numpy())
            g_true.append(labels.gender[gk].numpy())
    model.train(was_training)
    p = np.concatenate(preds).astype(np.float64) if preds else np.zeros(0)
    a = np.concatenate(ages).astype(np.float64) if ages else np.zeros(0)
    err = np.abs(p - a)
    if spec.age_type == "buckets5":
        bucket_acc = float(np.concatenate(age_bucket_hits).mean()) if len(a) else math.nan
    else:
        bucket_acc = float((age_buckets(p) == age_buckets(a)).mean()) if len(a) else math.nan
    gp = np.concatenate(g_pred) if g_pred else np.zeros(0)
    gt = np.concatenate(g_true) if g_true else np.zeros(0)
    return {
        "val_loss": float(np.average(losses, weights=counts)) if losses else math.nan,
        "val_mae": float(err.mean()) if len(a) else math.nan,
        "val_cs5": float((err <= 5).mean()) if len(a) else math.nan,
        "val_bucket_acc": bucket_acc,
        "val_gender_acc": float((gp == gt).mean()) if len(gt) else math.nan,
    }


def plot_curves(history: list[dict[str, Any]], run_dir: Path) -> None:
    """loss.png (train and val loss) and metrics.png (val MAE, CS@5, bucket and gender accuracy) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame(history)
    x = np.arange(1, len(df) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, df["train_loss"], marker="o", label="train")
    ax.plot(x, df["val_loss"], marker="o", label="val")
    ax.set(xlabel="epoch (all rounds)", ylabel="loss", title="Loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(x, df["val_mae"], marker="o", color="C3")
    axes[0].set(xlabel="epoch (all rounds)", ylabel="years", title="Val age MAE")
    curves = (("val_cs5", "CS@5"), ("val_bucket_acc", "5-bucket acc"), ("val_gender_acc", "gender acc"))
    for col, label in curves:
        if df[col].notna().any():
            axes[1].plot(x, df[col], marker="o", label=label)
    axes[1].set(xlabel="epoch (all rounds)", ylabel="fraction", title="Val accuracy", ylim=(0, 1))
    axes[1].legend()
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "metrics.png", dpi=100)
    plt.close(fig)


def write_metrics(history: list[dict[str, Any]], run_dir: Path) -> None:
    df = pd.DataFrame(history, columns=list(METRIC_COLUMNS))
    tmp = run_dir / ".metrics.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, run_dir / "metrics.csv")
    _atomic_write_text(run_dir / "metrics.json", json.dumps(history, indent=2, allow_nan=True))


def _better(metric: str, value: float, best: float | None) -> bool:
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best if SELECT_METRICS[metric] else value < best


def _cache_meta(cache: FaceCache) -> dict[str, Any]:
    return {"template": cache.meta.get("template", "arcface5"), "margin": cache.meta.get("margin"),
            "cache_size": cache.size, "cache": str(cache.path)}


@dataclass
class _Setup:
    cache: FaceCache
    train: FaceBatches
    val: FaceBatches
    loss: MultiTaskLoss
    augment: Augment


def _setup_data(cfg: RunConfig, log: Log) -> _Setup:
    cache = load_cache(cfg.data.cache)
    train_rows, val_rows = split_rows(cache, cfg, "train"), split_rows(cache, cfg, "val")
    if cfg.data.limit_val:
        # Evenly spaced, not the first rows: caches are often sorted by file name, i.e. by age.
        pick = np.linspace(0, len(val_rows) - 1, min(cfg.data.limit_val, len(val_rows))).round().astype(int)
        val_rows = val_rows[np.unique(pick)]
    spec = head_spec(cfg)
    age_w: np.ndarray | None = None
    bucket_w: Tensor | None = None
    gender_w: Tensor | None = None
    if cfg.data.class_weights == "balanced":
        idx = cache.index.iloc[train_rows]
        buckets = age_buckets(idx["age"].astype(float).to_numpy())
        w = balanced_weights(buckets, len(AGE_GROUPS))
        if spec.age_type == "buckets5":
            bucket_w = torch.tensor(w, dtype=torch.float32)
        else:
            age_w = w
        if cfg.heads.gender:
            g = idx["gender"].astype(float).to_numpy()
            g_labels = np.where(np.isnan(g), -1, np.nan_to_num(g)).astype(int)
            gender_w = torch.tensor(balanced_weights(g_labels, 2), dtype=torch.float32)
        log(f"class weights: age buckets {np.round(w, 3).tolist()}"
            + (f", gender {np.round(gender_w.numpy(), 3).tolist()}" if gender_w is not None else ""))
    train = FaceBatches(cache, train_rows, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
                        balanced=cfg.data.sampler == "balanced", limit_batches=cfg.data.limit_batches,
                        age_weights=age_w)
    val = FaceBatches(cache, val_rows, cfg.train.eval_batch_size, shuffle=False)
    log(f"data: {cache.path} (S={cache.size}), train {len(train_rows)} faces, val {len(val_rows)} faces, "
        f"{len(train)} batches/epoch of {cfg.train.batch_size}")
    return _Setup(cache, train, val, MultiTaskLoss(spec, cfg.loss, bucket_w, gender_w), Augment(cfg.augment))


def _round_dir(out: Path, plan: list[RoundConfig], i: int) -> Path:
    return out if len(plan) == 1 else out / str(plan[i].name)


def load_checkpoint(path: Path) -> dict[str, Any]:
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a facial-demographics training checkpoint")
    return ckpt


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (multi-round runs keep each round in a subdirectory)."""
    ckpt = load_checkpoint(checkpoint)
    return checkpoint.parent.parent if ckpt.get("multi_round") else checkpoint.parent


def train(cfg: RunConfig, out: Path, resume: Path | None = None, max_steps: int | None = None,
          on_epoch_end: Callable[[EpochState], None] | None = None, log: Log = _print,
          progress: bool = True, on_step: Callable[[StepState], None] | None = None) -> TrainResult:
    """Train every round of ``cfg`` into ``out`` (or continue from ``resume``, a ``last.pt``)."""
    ddp = ddp_hooks.current()  # DDP hook
    log, progress = ddp.log(log), progress and ddp.is_main  # DDP hook: rank 0 logs
    torch.set_num_threads(ddp.threads(cfg.train.threads))  # DDP hook: the node's threads shared by its ranks
    plan = cfg.round_plan()
    start_round, ckpt = 0, None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        start_round = int(ckpt["round_index"])
        if ckpt["epoch"] >= int(plan[start_round].epochs or 0) and start_round + 1 < len(plan):
            start_round, ckpt = start_round + 1, None  # that round had finished: go on with the next one
    out.mkdir(parents=True, exist_ok=True)
    if ddp.is_main:  # DDP hook
        _atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
    setup = _setup_data(cfg, log)
    setup.train = ddp.shard(setup.train)  # DDP hook: this rank's slice of every global batch
    history: list[dict[str, Any]] = []
    if resume is not None:
        history = list(load_checkpoint(resume).get("history", []))
    result: TrainResult | None = None
    for r in range(start_round, len(plan)):
        init = None
        if r > 0 and ckpt is None:
            prev = _round_dir(out, plan, r - 1) / f"{plan[r].init_from}.pt"
            ddp.barrier()  # DDP hook: rank 0 has finished writing it
            init = load_checkpoint(prev)
            log(f"round {plan[r].name}: starting from {prev} (epoch {init['epoch']})")
        result = _train_round(cfg, plan, r, _round_dir(out, plan, r), setup, history, ckpt, init, max_steps,
                              on_epoch_end, log, progress, on_step)
        history = result.history
        ckpt = None
        if max_steps is not None and history and history[-1]["global_step"] >= max_steps:
            break
    assert result is not None
    result.run_dir = out
    return result


def _train_round(cfg: RunConfig, plan: list[RoundConfig], r: int, run_dir: Path, setup: _Setup,
                 history: list[dict[str, Any]], ckpt: dict[str, Any] | None, init: dict[str, Any] | None,
                 max_steps: int | None, on_epoch_end: Callable[[EpochState], None] | None, log: Log,
                 progress: bool, on_step: Callable[[StepState], None] | None = None) -> TrainResult:
    rnd = plan[r]
    epochs, lr = int(rnd.epochs or cfg.train.epochs), float(rnd.lr or cfg.optim.lr)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = head_spec(cfg)
    fresh = ckpt is None and init is None
    if fresh:
        seed_everything(cfg.train.seed + r)
    model = build_model(cfg, pretrained=fresh)
    if fresh and spec.age_type == "regression":
        # Start the regressor at the median age: with an L1 loss a zero bias would take thousands of
        # steps to travel to adult ages.
        with torch.no_grad():
            last = model.age_head[-1]
            assert isinstance(last, nn.Linear)
            last.bias.fill_(float(np.nanmedian(setup.train.ages)))
    if init is not None:
        model.load_state_dict(init["ema_model"] if init.get("ema_model") else init["model"])
    memory = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)  # type: ignore[call-overload]
    ddp = ddp_hooks.current()  # DDP hook
    if fresh:
        ddp.seed_rank(cfg.train.seed + r)  # DDP hook: ranks > 0 get their own augmentation stream
    model = ddp.place(model)  # DDP hook: this rank's device
    net = ddp.wrap(model)  # DDP hook: the training step runs through DDP; model stays the plain module
    steps_per_epoch = len(setup.train)
    total_steps = epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    opt = make_optimizer(model, cfg, lr)
    sched = make_scheduler(opt, cfg, lr, steps_per_epoch, total_steps)
    ema = make_ema(model, cfg.train.ema_decay) if cfg.train.ema else None
    start_epoch, global_step, best, best_epoch = 0, 0, None, 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        set_rng_state(ddp.own_rng(ckpt["rng"]))  # DDP hook: each rank's own RNG stream
        start_epoch, global_step = int(ckpt["epoch"]), int(ckpt["global_step"])
        best, best_epoch = ckpt["best"]["value"], int(ckpt["best"]["epoch"])
        log(f"resumed {rnd.name} at epoch {start_epoch + 1}/{epochs}, step {global_step}, "
            f"lr {opt.param_groups[0]['lr']:.3g}")
    else:
        log(f"{cfg.name} {rnd.name}: {cfg.model.name} ({count_parameters(model) / 1e6:.2f}M params), "
            f"{epochs} epochs, lr {lr:g}, {cfg.optim.name}, {cfg.schedule.name} schedule, "
            f"{cfg.train.threads} threads")
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    select = cfg.train.select
    images_per_s = 0.0
    for epoch in range(start_epoch, epochs):
        if max_steps is not None and global_step >= max_steps:
            break
        model.train()
        t0 = time.perf_counter()
        sums = np.zeros(3)
        seen = 0
        bar = tqdm(setup.train.epoch(epoch), total=steps_per_epoch, disable=not progress, leave=False,
                   desc=f"{rnd.name} epoch {epoch + 1}/{epochs}", dynamic_ncols=True)
        for faces, labels in bar:
            x = train_input(faces, setup.augment, cfg.data.input_size, cfg.train.channels_last)
            age_logits, gender_logits = net(x)  # DDP hook: net, not model
            parts = setup.loss(age_logits, gender_logits, labels)
            opt.zero_grad(set_to_none=True)
            parts.total.backward()
            if cfg.optim.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            global_step += 1
            n = len(faces)
            # DDP hook: the global batch's loss sums and size (the identity in one process)
            step = ddp.reduce_sums(np.array([n * parts.total.item(), n * parts.age.item(), n * parts.gender.item(), n]))
            sums += step[:3]
            seen += int(step[3])
            if on_step is not None:
                mean = step[:3] / step[3]
                on_step(StepState(rnd.name, epoch + 1, global_step, float(opt.param_groups[0]["lr"]),
                                  float(mean[0]), float(mean[1]), float(mean[2]), int(step[3])))
            bar.set_postfix(loss=f"{sums[0] / seen:.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
            if max_steps is not None and global_step >= max_steps:
                break
        bar.close()
        train_seconds = time.perf_counter() - t0
        images_per_s = seen / max(train_seconds, 1e-9)
        evaluated = ddp.for_eval(eval_model(model, ema))  # DDP hook: fed from the CPU
        val = evaluate(evaluated, setup.val, spec, setup.loss, cfg.data.input_size, cfg.train.tta_flip,
                       cfg.train.channels_last)
        row: dict[str, Any] = {
            "round": rnd.name, "epoch": epoch + 1, "global_step": global_step,
            "lr": float(opt.param_groups[0]["lr"]),
            "train_loss": sums[0] / max(seen, 1), "train_age_loss": sums[1] / max(seen, 1),
            "train_gender_loss": sums[2] / max(seen, 1), **val,
            "images_per_s": images_per_s, "epoch_seconds": time.perf_counter() - t0,
        }
        history = history + [row]
        improved = _better(select, val[select], best)
        if improved:
            best, best_epoch = val[select], epoch + 1
        top = run_dir.parent if len(plan) > 1 else run_dir  # all rounds together at the top level
        if ddp.is_main:  # DDP hook: rank 0 alone writes files
            write_metrics(history, top)
            if len(plan) > 1:
                write_metrics([h for h in history if h["round"] == rnd.name], run_dir)
        checkpoint = {
            "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "round_index": r, "round": rnd.name,
            "multi_round": len(plan) > 1, "epoch": epoch + 1, "global_step": global_step,
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "ema_model": ema.module.state_dict() if ema is not None else None,
            "rng": ddp.gather_rng(rng_state()),  # DDP hook: every rank's state (collective)
            "best": {"metric": select, "value": best, "epoch": best_epoch},
            "metrics": row, "history": history, "data_meta": _cache_meta(setup.cache),
            "spec": {"age_type": spec.age_type, "age_outputs": spec.age_outputs, "gender": spec.gender},
        }
        if ddp.is_main:  # DDP hook: rank 0 alone writes files
            atomic_save(checkpoint, last_path)
            if improved:
                atomic_copy(last_path, best_path)
            try:
                plot_curves(history, top)
            except Exception as exc:  # a plotting problem must never lose a training run
                log(f"warning: could not draw learning curves: {exc}")
        log(f"{rnd.name} epoch {epoch + 1}/{epochs} step {global_step}: train loss {row['train_loss']:.4f}, "
            f"val loss {val['val_loss']:.4f}, MAE {val['val_mae']:.2f}, CS@5 {val['val_cs5']:.3f}, "
            f"bucket acc {val['val_bucket_acc']:.3f}, gender acc {val['val_gender_acc']:.3f}, "
            f"{images_per_s:.1f} img/s, {row['epoch_seconds']:.0f}s" + (" *best*" if improved else ""))
        if on_epoch_end is not None:
            on_epoch_end(EpochState(rnd.name, epoch + 1, global_step, row, run_dir))
    if ddp.is_main and not best_path.exists() and last_path.exists():  # DDP hook
        atomic_copy(last_path, best_path)
    best_info = {"metric": select, "value": best if best is not None else math.nan, "epoch": best_epoch}
    return TrainResult(run_dir, best_path, last_path, best_info, history, images_per_s)


def config_of(checkpoint: dict[str, Any]) -> RunConfig:
    return config_from_dict(checkpoint["config"])
