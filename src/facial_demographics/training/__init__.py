"""Training: configs, models, data from the aligned-face cache, the loop, and ONNX export.

This package needs the ``train`` extra (torch, kornia, onnx); nothing outside it imports it. The command
functions are importable without touching torch until they run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["train_command", "export_command"]


def train_command(config: Path | None, resume: Path | None = None, lr: float | None = None,
                  epochs: int | None = None, out: Path | None = None, cache: Path | None = None,
                  split: Path | None = None, max_steps: int | None = None, nproc: int = 1) -> Any:
    """See :func:`facial_demographics.training.cli.train_command`."""
    from .cli import train_command as run

    return run(config, resume=resume, lr=lr, epochs=epochs, out=out, cache=cache, split=split,
               max_steps=max_steps, nproc=nproc)


def export_command(ckpt: Path, out: Path, cache: Path | None = None, opset: int = 17) -> Path:
    """See :func:`facial_demographics.training.cli.export_command`."""
    from .cli import export_command as run

    return run(ckpt, out, cache=cache, opset=opset)
