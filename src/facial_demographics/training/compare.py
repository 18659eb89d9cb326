"""Compare finished (or running) training runs from their run directories: one row per run at its best
epoch, and overlaid learning curves.

The common ground between the seed classifier and the shipped model is the 5-bucket age accuracy and
the gender accuracy; the MAE of a bucket classifier uses the buckets' representative ages, so it is
shown but is not a like-for-like number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .config import SELECT_METRICS

SUMMARY_COLUMNS = ("run", "model", "age_head", "input_size", "epochs_run", "best_epoch", "select",
                   "val_mae", "val_cs5", "val_bucket_acc", "val_gender_acc", "images_per_s")


def load_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """A run's config (config.json) and per-epoch metrics (metrics.csv); raises naming the missing file."""
    run_dir = Path(run_dir)
    for name in ("config.json", "metrics.csv"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir}: not a training run directory ({name} missing)")
    return json.loads((run_dir / "config.json").read_text()), pd.read_csv(run_dir / "metrics.csv")


def run_label(cfg: dict[str, Any], run_dir: Path) -> str:
    """The config's name, with the folder when they differ (two runs of one config stay apart)."""
    name, folder = cfg["name"], Path(run_dir).name
    return name if folder == name else f"{name} ({folder})"


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """The run's metrics at the epoch its ``train.select`` metric liked best."""
    cfg, metrics = load_run(run_dir)
    select = cfg["train"]["select"]
    col = metrics[select]
    best = col.idxmax() if SELECT_METRICS[select] else col.idxmin()
    row = metrics.loc[best] if col.notna().any() else metrics.iloc[-1]
    return {
        "run": run_label(cfg, run_dir),
        "model": cfg["model"]["name"], "age_head": cfg["heads"]["age"],
        "input_size": cfg["data"]["input_size"],
        "epochs_run": len(metrics), "best_epoch": int(best) + 1 if col.notna().any() else math.nan,
        "select": select,
        **{k: float(row[k]) for k in ("val_mae", "val_cs5", "val_bucket_acc", "val_gender_acc")},
        "images_per_s": float(metrics["images_per_s"].median()),
    }


def compare_runs(run_dirs: list[Path]) -> pd.DataFrame:
    return pd.DataFrame([summarize_run(Path(r)) for r in run_dirs], columns=list(SUMMARY_COLUMNS))


def plot_comparison(run_dirs: list[Path], out_png: Path) -> Path:
    """Val MAE, 5-bucket accuracy and gender accuracy against epoch, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for run_dir in run_dirs:
        cfg, metrics = load_run(Path(run_dir))
        x = range(1, len(metrics) + 1)
        for ax, col in zip(axes, ("val_mae", "val_bucket_acc", "val_gender_acc"), strict=True):
            if metrics[col].notna().any():
                ax.plot(x, metrics[col], marker=".", label=run_label(cfg, run_dir))
    for ax, title in zip(axes, ("Val age MAE (years)", "Val 5-bucket accuracy", "Val gender accuracy"),
                         strict=True):
        ax.set(title=title, xlabel="epoch (all rounds)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def cell(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-style table (pandas' to_markdown needs tabulate, which we do not depend on)."""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_comparison(runs: list[Path], out: Path) -> tuple[pd.DataFrame, list[Path]]:
    """Compare ``runs`` and write comparison.csv, comparison.md and comparison.png into ``out``."""
    table = compare_runs(runs)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "comparison.csv", index=False)
    (out / "comparison.md").write_text(to_markdown(table))
    plot_comparison(runs, out / "comparison.png")
    return table, [out / "comparison.csv", out / "comparison.md", out / "comparison.png"]
