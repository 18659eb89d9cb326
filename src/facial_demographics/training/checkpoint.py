"""Training checkpoints: the typed :class:`Checkpoint`, read once, and the saver that writes them atomically.

A checkpoint holds everything a run needs to continue exactly: model, optimiser, scheduler, EMA, RNG
states, the config, the history and the best value so far. ``last.pt`` is rewritten after every epoch via
a temporary file and ``os.replace``, so a killed run never leaves a half-written file; ``best.pt`` is a
copy of the best epoch's ``last.pt``.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from .config import RunConfig, config_from_dict

CHECKPOINT_FORMAT = 1


class CheckpointError(UserError, ValueError):
    """The file is not a facial-demographics training checkpoint."""


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


def atomic_write_text(path: Path, text: str) -> None:
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


@dataclass(frozen=True)
class Best:
    """The best value of the selection metric so far and the epoch (1-based, in its round) it came from."""

    metric: str
    value: float | None
    epoch: int

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "epoch": self.epoch}


@dataclass(frozen=True)
class Checkpoint:
    """One saved epoch. ``states`` holds the tensors: ``model``, ``optimizer``, ``scheduler``, ``ema``,
    ``ema_model`` (None without EMA) and ``rng``."""

    config: RunConfig
    round_index: int
    round: str
    multi_round: bool
    epoch: int  # epochs completed in this round
    global_step: int
    best: Best
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    data_meta: dict[str, Any]
    spec: dict[str, Any]
    states: dict[str, Any] = field(repr=False)
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Read a checkpoint file once.

        Raises:
            CheckpointError: the file is not a training checkpoint of this format.
        """
        raw: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: not a facial-demographics training checkpoint")
        best = raw["best"]
        states = {k: raw.get(k) for k in ("model", "optimizer", "scheduler", "ema", "ema_model", "rng")}
        return cls(config_from_dict(raw["config"]), int(raw["round_index"]), str(raw["round"]),
                   bool(raw.get("multi_round")), int(raw["epoch"]), int(raw["global_step"]),
                   Best(best["metric"], best["value"], int(best["epoch"])), dict(raw.get("metrics") or {}),
                   list(raw.get("history", [])), dict(raw.get("data_meta") or {}), dict(raw.get("spec") or {}),
                   states, Path(path))

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form (the keys ``load`` reads)."""
        return {
            "format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "round_index": self.round_index,
            "round": self.round, "multi_round": self.multi_round, "epoch": self.epoch,
            "global_step": self.global_step, **self.states, "best": self.best.to_dict(),
            "metrics": self.metrics, "history": self.history, "data_meta": self.data_meta, "spec": self.spec,
        }

    @property
    def eval_weights(self) -> dict[str, Any]:
        """The weights that were validated and are exported: the EMA copy when the run kept one."""
        weights: dict[str, Any] = self.states["ema_model"] or self.states["model"]
        return weights

    @property
    def run_dir(self) -> Path:
        """The run directory (multi-round runs keep each round in a subdirectory)."""
        assert self.path is not None, "only a loaded checkpoint knows its run directory"
        return self.path.parent.parent if self.multi_round else self.path.parent


class CheckpointSaver:
    """Writes ``last.pt`` every epoch and copies it to ``best.pt`` when the epoch improved."""

    def __init__(self, run_dir: Path) -> None:
        self.last, self.best = run_dir / "last.pt", run_dir / "best.pt"

    def save(self, checkpoint: Checkpoint, improved: bool) -> None:
        atomic_save(checkpoint.to_dict(), self.last)
        if improved:
            atomic_copy(self.last, self.best)

    def finish(self) -> None:
        """A run with no improving epoch (all NaN) still leaves a ``best.pt``."""
        if not self.best.exists() and self.last.exists():
            atomic_copy(self.last, self.best)

