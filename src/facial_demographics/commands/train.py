"""``train`` and ``compare-runs``: training your own models (``export`` is in :mod:`.export`)."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ._common import err, need_extra, user_errors


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


def train(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Run config (TOML path, or a packaged name: default, seed, seed_wiki, tiny).")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue from a last.pt checkpoint.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Override the initial learning rate.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Override the number of epochs.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default runs/<config name>).")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help=(
        "Train on this aligned-face cache ('data prepare' output) instead of the config's.")) ] = None,
    split: Annotated[Path | None, typer.Option("--split", help=(
        "The key,split CSV ('data split' output). Default: the config's split, or with --cache the cache's "
        "split.csv, made (seeded, by identity when the data has one) if it is not there yet."))] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after N steps.")] = None,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help=(
        "Processes on this machine (DistributedDataParallel: gloo on CPU, NCCL on GPUs); "
        "train.batch_size stays the global batch. For several machines use torchrun."))] = 1,
    precision: Annotated[Precision | None, typer.Option(
        "--precision", help="Override train.precision: fp32, or bf16 autocast (weights stay fp32). On GPUs and "
        "for the seed's plain convolutions on CPUs with AVX512-BF16 it is faster; for EfficientNet on "
        "this CPU it was 1.8x slower (see README).")] = None,
    device: Annotated[str, typer.Option("--device", help=(
        "Where one process trains: auto (the first GPU PyTorch sees, else the CPU), cpu, cuda or cuda:N. "
        "The batch augmentation runs there too. --nproc ranks each take their own GPU when there are "
        "enough."))] = "auto",
) -> None:
    """Train a model from a TOML config: checkpoints every epoch, metrics CSV/JSON, learning curves."""
    need_extra("train")
    from ..training.run import run_training

    with user_errors():
        split = _resolve_split(config, resume, lr, epochs, cache, split)
        result = run_training(config, resume=resume, lr=lr, epochs=epochs, out=out, cache=cache, split=split,
                              max_steps=max_steps, nproc=nproc,
                              precision=None if precision is None else precision.value, device=device)
    if int(os.environ.get("RANK", "0")) != 0:  # a torchrun rank other than 0: rank 0 reports
        return
    best = result.best
    typer.echo(f"done: best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}; checkpoints "
               f"{result.best_checkpoint} and {result.last_checkpoint}; curves, metrics and steps.csv in "
               f"{result.run_dir}" + (f" ({nproc} processes)" if nproc > 1 else ""))


def _resolve_split(config: Path | None, resume: Path | None, lr: float | None, epochs: int | None,
                   cache: Path | None, split: Path | None) -> Path | None:
    """The split file a fresh run uses (see training/autosplit.py), said on stderr when it is made.

    Raises:
        UserError: the config or the cache cannot be read.
    """
    if config is None or resume is not None:  # a resumed run keeps its checkpoint's split
        return split
    from ..training.autosplit import choose_split
    from ..training.config import load_config, with_overrides

    cfg = with_overrides(load_config(config), lr=lr, epochs=epochs, cache=cache, split=split)
    choice = choose_split(cfg, cache_given=cache is not None, split_given=split is not None)
    if int(os.environ.get("RANK", "0")) == 0:
        err.print(choice.describe(), highlight=False, markup=False)
    return choice.path if choice.path is not None else split


def compare_runs(
    runs: Annotated[list[Path], typer.Argument(help="Training run directories (each with metrics.json).")],
    out: Annotated[Path | None, typer.Option("--out", help="Write comparison.csv/.md/.png here.")] = None,
) -> None:
    """Compare training runs at their best validation epoch (table, markdown and an overlay plot)."""
    need_extra("data")
    from rich.console import Console
    from rich.table import Table

    from ..training.compare import SUMMARY_COLUMNS, cell, compare_runs, write_comparison

    with user_errors():
        table = write_comparison(runs, out)[0] if out is not None else compare_runs(runs)
    view = Table(title="Training runs at their best epoch")
    for col in SUMMARY_COLUMNS:
        view.add_column(col, justify="right" if col not in ("run", "model", "age_head", "select") else "left")
    for _, row in table.iterrows():
        view.add_row(*(cell(v) for v in row))
    Console().print(view)
