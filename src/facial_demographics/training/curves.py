"""Per-epoch records of a run: ``metrics.csv``/``metrics.json`` and the learning-curve PNGs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .checkpoint import atomic_write_text

METRIC_COLUMNS = ("round", "epoch", "global_step", "lr", "train_loss", "train_age_loss", "train_gender_loss",
                  "val_loss", "val_mae", "val_cs5", "val_bucket_acc", "val_gender_acc", "images_per_s",
                  "epoch_seconds")
OPTIONAL_COLUMNS = ("train_teacher_loss",)  # runs with a [teacher] only


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
    if "train_teacher_loss" in df:
        ax.plot(x, df["train_teacher_loss"], marker=".", linestyle="--", label="train teacher term (unweighted)")
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
    extra = [c for c in OPTIONAL_COLUMNS if any(c in h for h in history)]
    df = pd.DataFrame(history, columns=[*METRIC_COLUMNS, *extra])
    tmp = run_dir / ".metrics.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, run_dir / "metrics.csv")
    atomic_write_text(run_dir / "metrics.json", json.dumps(history, indent=2, allow_nan=True))
