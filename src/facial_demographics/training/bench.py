"""Measure training and eval throughput (images/s) of a config on this machine, with the real data path.

Used to size a run: epochs ~= minutes * 60 * train_img_s / (train faces + eval cost).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig, load_config, with_overrides
from .data import Augment, to_input, train_input
from .models import build_model
from .optim import make_optimizer
from .validate import predict_logits


@dataclass
class Throughput:
    train_images_per_s: float
    eval_images_per_s: float


def measure(cfg: RunConfig, steps: int = 6, faces: np.ndarray | None = None) -> Throughput:
    """Time ``steps`` optimiser steps (after a warm-up) and as many eval batches, on random or given faces."""
    torch.set_num_threads(cfg.train.threads)
    size, bs = cfg.data.input_size, cfg.train.batch_size
    if faces is None:
        faces = np.random.default_rng(0).integers(0, 256, (bs, size, size, 3), dtype=np.uint8)
    batch = torch.from_numpy(np.ascontiguousarray(faces[:bs]))
    model = build_model(cfg, pretrained=False)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = make_optimizer(model, cfg, cfg.optim.lr)
    augment = Augment(cfg.augment)
    model.train()
    t0 = 0.0
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        # A model with a [teacher] head answers (age, gender, teacher) in training mode: its cost counts too.
        outputs = model(train_input(batch, augment, size, cfg.train.channels_last))
        loss = sum((o.logsumexp(1).mean() for o in outputs if o is not None), torch.zeros(()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_rate = steps * len(batch) / (time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        x = to_input(batch, size, cfg.train.channels_last)
        predict_logits(model, x, cfg.train.tta_flip)
        t0 = time.perf_counter()
        for _ in range(steps):
            predict_logits(model, x, cfg.train.tta_flip)
        eval_rate = steps * len(batch) / (time.perf_counter() - t0)
    return Throughput(train_rate, eval_rate)


def bench_command(config: Path, steps: int = 6, minutes: float = 60.0, train_faces: int = 16150,
                  val_faces: int = 2018) -> Throughput:
    """Print images/s and the number of epochs that fit in ``minutes``."""
    cfg = with_overrides(load_config(config))
    t = measure(cfg, steps)
    epoch_s = train_faces / t.train_images_per_s + val_faces / t.eval_images_per_s
    print(f"{cfg.name}: {cfg.model.name} at {cfg.data.input_size}px, batch {cfg.train.batch_size}, "
          f"{cfg.train.threads} threads: train {t.train_images_per_s:.1f} img/s, eval "
          f"{t.eval_images_per_s:.1f} img/s{' (flip TTA)' if cfg.train.tta_flip else ''}; one epoch over "
          f"{train_faces} faces ~ {epoch_s / 60:.1f} min -> {max(1, int(minutes * 60 // epoch_s))} epochs "
          f"in {minutes:g} min", flush=True)
    return t


if __name__ == "__main__":
    import sys

    bench_command(Path(sys.argv[1] if len(sys.argv) > 1 else "default"))
