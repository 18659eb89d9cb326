"""The training loop: epochs over the cache, validation metrics, learning curves and resumable checkpoints.

Each epoch ends with val metrics appended to ``metrics.csv``/``metrics.json``, curves redrawn and
``last.pt`` written atomically (see :mod:`.checkpoint`); ``best.pt`` is a copy of the best epoch by
``train.select``. So a killed run loses at most the epoch in progress, and ``resume`` continues at the
next epoch with the same global step and learning rate. The parts live apart, as in timm: optimiser,
scheduler and EMA in :mod:`.optim`, validation in :mod:`.validate`, records and curves in :mod:`.curves`.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from ..datasets.cache import FaceCache, load_cache
from ..labels import AGE_GROUPS, age_buckets, gender_codes
from ..registry import resolve as resolve_bundle
from . import distributed as ddp_hooks  # DDP hooks (training/distributed.py): identity in one process
from .checkpoint import Best, Checkpoint, CheckpointSaver, atomic_write_text, rng_state, seed_everything, set_rng_state
from .config import SELECT_METRICS, ConfigError, RoundConfig, RunConfig
from .curves import plot_curves, write_metrics
from .data import Augment, FaceBatches, balanced_weights, split_rows, teacher_targets, train_input, with_mirror
from .losses import MultiTaskLoss, flip_consistency
from .models import AgeGenderNet, build_model, count_parameters, head_spec
from .optim import make_ema, make_optimizer, make_scheduler
from .unfold import weights_from_bundle
from .validate import eval_model, evaluate, predict_logits

__all__ = ["EpochState", "StepState", "TrainResult", "train", "predict_logits"]
Log = Callable[[str], None]
#: Training batches whose faces measure a rebuilt bundle's BatchNorm statistics (train.start_from).
START_STAT_BATCHES = 16


@dataclass
class EpochState:
    """What an ``on_epoch_end`` callback sees after each epoch's checkpoint is written."""

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
            g_labels = gender_codes(idx["gender"].astype(float).to_numpy())
            gender_w = torch.tensor(balanced_weights(g_labels, 2), dtype=torch.float32)
        log(f"class weights: age buckets {np.round(w, 3).tolist()}"
            + (f", gender {np.round(gender_w.numpy(), 3).tolist()}" if gender_w is not None else ""))
    teacher = teacher_targets(cache, cfg, train_rows)
    train = FaceBatches(cache, train_rows, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
                        sampler=cfg.data.sampler, sampler_power=cfg.data.sampler_power,
                        limit_batches=cfg.data.limit_batches,
                        age_weights=age_w, teacher=teacher, gender_balance=cfg.data.gender_balance,
                        child_gender_weight=cfg.data.child_gender_weight)
    val = FaceBatches(cache, val_rows, cfg.train.eval_batch_size, shuffle=False)
    log(f"data: {cache.path} (S={cache.size}), train {len(train_rows)} faces, val {len(val_rows)} faces, "
        f"{len(train)} batches/epoch of {cfg.train.batch_size}")
    if train.gender_weight is not None:
        log(f"gender-loss weights: {train.gender_weight_summary()}"
            f" (balance {cfg.data.gender_balance}, children 0-12 x{cfg.data.child_gender_weight:g})")
    if teacher is not None:
        described = int((~np.isnan(teacher[train_rows]).any(1)).sum())
        log(f"teacher: {cfg.teacher.descriptors}, {described}/{len(train_rows)} train faces with a descriptor, "
            f"{cfg.teacher.loss} loss x {cfg.teacher.weight:g}" + (", centred" if cfg.teacher.centre else ""))
    loss = MultiTaskLoss(spec, cfg.loss, bucket_w, gender_w, cfg.teacher)
    return _Setup(cache, train, val, loss, Augment(cfg.augment))


def round_dir(out: Path, plan: list[RoundConfig], i: int) -> Path:
    """Where round ``i`` of a run writes: the run directory itself, or a subfolder per round."""
    return out if len(plan) == 1 else out / str(plan[i].name)


def train(cfg: RunConfig, out: Path, resume: Path | Checkpoint | None = None, max_steps: int | None = None,
          on_epoch_end: Callable[[EpochState], None] | None = None, log: Log = _print,
          progress: bool = True, on_step: Callable[[StepState], None] | None = None) -> TrainResult:
    """Train every round of ``cfg`` into ``out`` (or continue from ``resume``, a ``last.pt``).

    Args:
        cfg: the run config.
        out: the run directory (created).
        resume: a ``last.pt`` (path or already loaded) to continue from.
        max_steps: stop after this many optimiser steps (smoke runs).
        on_epoch_end: called after each epoch's checkpoint is on disk; an exception it raises stops the run.
        log: where progress lines go.
        progress: show a per-batch progress bar.
        on_step: called after every optimiser step (rank 0 only in a multi-process run).

    Returns:
        The last round's result, with the run's whole history.
    """
    ddp = ddp_hooks.current()  # DDP hook
    log, progress = ddp.log(log), progress and ddp.is_main  # DDP hook: rank 0 logs
    torch.set_num_threads(ddp.threads(cfg.train.threads))  # DDP hook: the node's threads shared by its ranks
    plan = cfg.round_plan()
    start_round, ckpt, history = 0, None, []
    if resume is not None:
        ckpt = resume if isinstance(resume, Checkpoint) else Checkpoint.load(resume)
        start_round, history = ckpt.round_index, list(ckpt.history)
        if ckpt.epoch >= int(plan[start_round].epochs or 0) and start_round + 1 < len(plan):
            start_round, ckpt = start_round + 1, None  # that round had finished: go on with the next one
    out.mkdir(parents=True, exist_ok=True)
    if ddp.is_main:  # DDP hook
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
    setup = _setup_data(cfg, log)
    setup.train = ddp.shard(setup.train)  # DDP hook: this rank's slice of every global batch
    result: TrainResult | None = None
    for r in range(start_round, len(plan)):
        init: dict[str, Any] | None = None
        if r > 0 and ckpt is None:
            prev = round_dir(out, plan, r - 1) / f"{plan[r].init_from}.pt"
            ddp.barrier()  # DDP hook: rank 0 has finished writing it
            previous = Checkpoint.load(prev)
            init = previous.eval_weights
            log(f"round {plan[r].name}: starting from {prev} (epoch {previous.epoch})")
        elif r == 0 and ckpt is None and cfg.train.start_from:
            init = _start_weights(cfg, setup, log)
        job = _Round(cfg, plan, r, round_dir(out, plan, r), setup, max_steps, on_epoch_end, log, progress,
                     on_step)
        result = job.run(history, ckpt, init)
        history = result.history
        ckpt = None
        if max_steps is not None and history and history[-1]["global_step"] >= max_steps:
            break
    assert result is not None
    result.run_dir = out
    return result


def _start_weights(cfg: RunConfig, setup: _Setup, log: Log) -> dict[str, Any]:
    """``train.start_from``'s weights: a checkpoint's EMA weights, or a bundle's graph rebuilt as this config's
    network with BatchNorm statistics from augmented training faces (training/unfold.py)."""
    source = cfg.train.start_from
    if source.endswith(".pt"):
        if not Path(source).is_file():
            raise ConfigError(f"train.start_from: {source}: no such checkpoint")
        weights = Checkpoint.load(Path(source)).eval_weights
        try:
            build_model(cfg, pretrained=False).load_state_dict(weights)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"train.start_from: {source}: its weights do not fit {cfg.model.name} ({first})") \
                from None
        log(f"starting from the weights of {source}")
        return weights
    bundle = resolve_bundle(source)  # a registry name or a folder, resolved once for the rebuild and the log
    faces = (train_input(f, setup.augment, cfg.data.input_size, False)
             for f, _ in itertools.islice(setup.train.epoch(0), START_STAT_BATCHES))
    weights = weights_from_bundle(bundle, cfg, faces)
    log(f"starting from the bundle {bundle} (BatchNorm statistics from up to {START_STAT_BATCHES} training "
        f"batches)")
    return weights


@dataclass
class _State:
    """The mutable state of one round: what a checkpoint saves and a resume restores."""

    model: AgeGenderNet
    net: nn.Module  # what the training step calls: the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: AveragedModel | None
    epoch: int = 0
    global_step: int = 0
    best: float | None = None
    best_epoch: int = 0

    def restore(self, ckpt: Checkpoint) -> None:
        s = ckpt.states
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["optimizer"])
        self.sched.load_state_dict(s["scheduler"])
        if self.ema is not None and s.get("ema") is not None:
            self.ema.load_state_dict(s["ema"])
        set_rng_state(ddp_hooks.current().own_rng(s["rng"]))  # DDP hook: each rank's own RNG stream
        self.epoch, self.global_step = ckpt.epoch, ckpt.global_step
        self.best, self.best_epoch = ckpt.best.value, ckpt.best.epoch

    def states(self) -> dict[str, Any]:
        ema = self.ema
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "ema_model": ema.module.state_dict() if ema is not None else None,
                "rng": ddp_hooks.current().gather_rng(rng_state())}  # DDP hook: every rank's (collective)

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])


@dataclass
class _Round:
    """One round of a run's plan: builds the state, runs its epochs, saves and reports each."""

    cfg: RunConfig
    plan: list[RoundConfig]
    index: int
    run_dir: Path
    setup: _Setup
    max_steps: int | None
    on_epoch_end: Callable[[EpochState], None] | None
    log: Log
    progress: bool
    on_step: Callable[[StepState], None] | None = None

    @property
    def rnd(self) -> RoundConfig:
        return self.plan[self.index]

    @property
    def epochs(self) -> int:
        return int(self.rnd.epochs or self.cfg.train.epochs)

    def _stop(self, state: _State) -> bool:
        return self.max_steps is not None and state.global_step >= self.max_steps

    def run(self, history: list[dict[str, Any]], ckpt: Checkpoint | None,
            init: dict[str, Any] | None) -> TrainResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = self._build(ckpt, init)
        saver = CheckpointSaver(self.run_dir)
        images_per_s = 0.0
        for epoch in range(state.epoch, self.epochs):
            if self._stop(state):
                break
            t0 = time.perf_counter()
            sums, seen = self._train_epoch(state, epoch)
            images_per_s = seen / max(time.perf_counter() - t0, 1e-9)
            history = history + [self._finish_epoch(state, epoch, sums, seen, images_per_s, t0, history, saver)]
        if ddp_hooks.current().is_main:  # DDP hook
            saver.finish()
        select = self.cfg.train.select
        value = state.best if state.best is not None else math.nan
        best_info = {"metric": select, "value": value, "epoch": state.best_epoch}
        return TrainResult(self.run_dir, saver.best, saver.last, best_info, history, images_per_s)

    def _build(self, ckpt: Checkpoint | None, init: dict[str, Any] | None) -> _State:
        cfg, spec = self.cfg, head_spec(self.cfg)
        lr = float(self.rnd.lr or cfg.optim.lr)
        fresh = ckpt is None and init is None
        first = ckpt is None and self.index == 0  # a fresh run, or a fine-tune from train.start_from
        if first or fresh:
            seed_everything(cfg.train.seed + self.index)
        # A fresh run takes the config's ``model.pretrained``; a resumed or chained round loads its weights.
        model = build_model(cfg, pretrained=None if fresh else False)
        if fresh and spec.age_type == "regression":
            # Start the regressor at the median age: with an L1 loss a zero bias would take thousands of
            # steps to travel to adult ages.
            with torch.no_grad():
                last = model.age_head[-1]
                assert isinstance(last, nn.Linear)
                last.bias.fill_(float(np.nanmedian(self.setup.train.ages)))
        if init is not None:
            model.load_state_dict(init)
        memory = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        model = model.to(memory_format=memory)  # type: ignore[call-overload]
        ddp = ddp_hooks.current()  # DDP hook
        if first or fresh:
            ddp.seed_rank(cfg.train.seed + self.index)  # DDP hook: ranks > 0 get their own augmentation stream
        model = ddp.place(model)  # DDP hook: this rank's device
        steps_per_epoch = len(self.setup.train)
        total_steps = self.epochs * steps_per_epoch
        if self.max_steps is not None:
            total_steps = min(total_steps, self.max_steps)
        opt = make_optimizer(model, cfg, lr)
        state = _State(model, ddp.wrap(model), opt, make_scheduler(opt, cfg, lr, steps_per_epoch, total_steps),
                       make_ema(model, cfg.train.ema_decay) if cfg.train.ema else None)
        if ckpt is not None:
            state.restore(ckpt)
            self.log(f"resumed {self.rnd.name} at epoch {state.epoch + 1}/{self.epochs}, step {state.global_step}, "
                     f"lr {state.lr:.3g}, on {ddp.device}")
        else:
            self.log(f"{cfg.name} {self.rnd.name}: {cfg.model.name} ({count_parameters(model) / 1e6:.2f}M "
                     f"params), {self.epochs} epochs, lr {lr:g}, {cfg.optim.name}, {cfg.schedule.name} schedule, "
                     f"{cfg.train.threads} threads, on {ddp.device}")
        return state

    def _autocast(self, x: torch.Tensor) -> torch.autocast:
        """bfloat16 autocast for the forward pass when ``train.precision`` asks for it (the loss, the
        optimiser and the weights stay fp32; backward follows the forward's dtypes)."""
        enabled = self.cfg.train.precision == "bf16"
        return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _train_epoch(self, state: _State, epoch: int) -> tuple[np.ndarray, int]:
        """One pass over the training batches; returns the summed (age + gender, age, gender, teacher) losses
        and the faces seen."""
        cfg, setup = self.cfg, self.setup
        ddp = ddp_hooks.current()  # DDP hook
        state.model.train()
        sums, seen = np.zeros(4), 0
        # The batch is augmented where the model runs: on a GPU the kornia ops cost a sliver of what they cost
        # on the CPU (215 ms of a 770 ms step there), and only the uint8 faces cross the bus.
        device = torch.device(ddp.device)
        bar = tqdm(setup.train.epoch(epoch), total=len(setup.train), disable=not self.progress, leave=False,
                   desc=f"{self.rnd.name} epoch {epoch + 1}/{self.epochs}", dynamic_ncols=True)
        for faces, labels in bar:
            x = train_input(faces.to(device), setup.augment, cfg.data.input_size, cfg.train.channels_last)
            mirror = cfg.loss.flip_consistency > 0
            if mirror:
                x, labels = with_mirror(x, labels)
            with self._autocast(x):
                outputs = state.net(x)  # DDP hook: net, not model
            # (age, gender) or, with a [teacher], (age, gender, teacher): the aux output exists in training only.
            # The loss runs in fp32 whatever the forward's precision.
            gender, *aux = (None if o is None else o.float() for o in outputs[1:])
            parts = setup.loss(outputs[0].float(), gender, labels, aux[0] if aux else None)
            total = parts.total
            if mirror:
                total = total + cfg.loss.flip_consistency * flip_consistency(outputs[0].float(), gender)
            state.opt.zero_grad(set_to_none=True)
            total.backward()
            if cfg.optim.grad_clip > 0:
                nn.utils.clip_grad_norm_(state.model.parameters(), cfg.optim.grad_clip)
            state.opt.step()
            state.sched.step()
            if state.ema is not None:
                state.ema.update_parameters(state.model)
            state.global_step += 1
            n = len(faces)
            # DDP hook: the global batch's loss sums and size (the identity in one process)
            teacher = 0.0 if parts.teacher is None else parts.teacher.item()
            # The recorded loss is the task's (age + gender), comparable with val_loss and a run without a
            # teacher; the teacher term is recorded on its own (train_teacher_loss).
            step = ddp.reduce_sums(np.array([n * parts.task.item(), n * parts.age.item(), n * parts.gender.item(),
                                             n * teacher, n]))
            sums += step[:4]
            seen += int(step[4])
            if self.on_step is not None:
                mean = step[:3] / step[4]
                self.on_step(StepState(str(self.rnd.name), epoch + 1, state.global_step, state.lr, float(mean[0]),
                                       float(mean[1]), float(mean[2]), int(step[4])))
            bar.set_postfix(loss=f"{sums[0] / seen:.3f}", lr=f"{state.lr:.2e}")
            if self._stop(state):
                break
        bar.close()
        return sums, seen

    def _finish_epoch(self, state: _State, epoch: int, sums: np.ndarray, seen: int, images_per_s: float,
                      t0: float, history: list[dict[str, Any]], saver: CheckpointSaver) -> dict[str, Any]:
        """Validate, record, checkpoint, draw and report one finished epoch; returns its metrics row."""
        cfg, setup, rnd = self.cfg, self.setup, self.rnd
        spec = head_spec(cfg)
        ddp = ddp_hooks.current()  # DDP hook
        evaluated = ddp.for_eval(eval_model(state.model, state.ema))  # DDP hook: fed from the CPU
        val = evaluate(evaluated, setup.val, spec, setup.loss, cfg.data.input_size, cfg.train.tta_flip,
                       cfg.train.channels_last)
        row: dict[str, Any] = {
            "round": rnd.name, "epoch": epoch + 1, "global_step": state.global_step, "lr": state.lr,
            "train_loss": sums[0] / max(seen, 1), "train_age_loss": sums[1] / max(seen, 1),
            "train_gender_loss": sums[2] / max(seen, 1),
            **({"train_teacher_loss": sums[3] / max(seen, 1)} if cfg.teacher.descriptors else {}), **val,
            "images_per_s": images_per_s, "epoch_seconds": time.perf_counter() - t0,
        }
        history = history + [row]
        select = cfg.train.select
        improved = _better(select, val[select], state.best)
        if improved:
            state.best, state.best_epoch = val[select], epoch + 1
        multi = len(self.plan) > 1
        top = self.run_dir.parent if multi else self.run_dir  # all rounds together at the top level
        checkpoint = Checkpoint(
            cfg, self.index, str(rnd.name), multi, epoch + 1, state.global_step,
            Best(select, state.best, state.best_epoch), row, history, _cache_meta(setup.cache),
            {"age_type": spec.age_type, "age_outputs": spec.age_outputs, "gender": spec.gender},
            state.states())  # every rank: gathering the RNG states is collective
        if ddp.is_main:  # DDP hook: rank 0 alone writes files
            write_metrics(history, top)
            if multi:
                write_metrics([h for h in history if h["round"] == rnd.name], self.run_dir)
            saver.save(checkpoint, improved)
            try:
                plot_curves(history, top)
            except Exception as exc:  # a plotting problem must never lose a training run
                self.log(f"warning: could not draw learning curves: {exc}")
        self.log(f"{rnd.name} epoch {epoch + 1}/{self.epochs} step {state.global_step}: train loss "
                 f"{row['train_loss']:.4f}, val loss {val['val_loss']:.4f}, MAE {val['val_mae']:.2f}, CS@5 "
                 f"{val['val_cs5']:.3f}, bucket acc {val['val_bucket_acc']:.3f}, gender acc "
                 f"{val['val_gender_acc']:.3f}, "
                 + (f"teacher loss {row['train_teacher_loss']:.3f}, " if "train_teacher_loss" in row else "")
                 + f"{images_per_s:.1f} img/s, {row['epoch_seconds']:.0f}s"
                 + (" *best*" if improved else ""))
        if self.on_epoch_end is not None:
            self.on_epoch_end(EpochState(str(rnd.name), epoch + 1, state.global_step, row, self.run_dir))
        return row
