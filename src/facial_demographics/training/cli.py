"""Command functions the CLI wires in: ``facial-demographics train`` and ``facial-demographics export``."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import Checkpoint
from .config import ConfigError, load_config, with_overrides
from .loop import TrainResult, train


def train_command(config: Path | None, resume: Path | None = None, lr: float | None = None,
                  epochs: int | None = None, out: Path | None = None, cache: Path | None = None,
                  split: Path | None = None, max_steps: int | None = None,
                  progress: bool = True) -> TrainResult:
    """Train a run described by a TOML config; CLI values override the config's.

    Without ``out`` the run goes to ``runs/<config name>`` (or, when resuming, the checkpoint's run dir).
    """
    if config is None and resume is None:
        raise ConfigError("give --config (a TOML run config) or --resume (a last.pt checkpoint)")
    ckpt = Checkpoint.load(resume) if resume is not None else None  # read once, used three ways
    base = load_config(config) if config is not None else ckpt.config  # type: ignore[union-attr]
    cfg = with_overrides(base, lr=lr, epochs=epochs, cache=cache, split=split)
    if out is None:
        out = ckpt.run_dir if ckpt is not None else Path("runs") / cfg.name
    result = train(cfg, Path(out), resume=ckpt, max_steps=max_steps, progress=progress)
    best = result.best
    print(f"done: best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}; "
          f"checkpoints {result.best_checkpoint} and {result.last_checkpoint}; curves and metrics in {out}",
          flush=True)
    return result


def export_command(ckpt: Path, out: Path, cache: Path | None = None, opset: int = 17) -> Path:
    """Export a checkpoint to an ONNX model bundle and check it against torch; returns the bundle dir."""
    from .export import export_bundle

    report = export_bundle(ckpt, out, cache=cache, opset=opset)
    print(f"exported {report.bundle} ({report.onnx_bytes / 1e6:.2f} MB); max |torch - onnxruntime| on "
          f"{report.faces} faces: {report.max_abs_diff:.2e}", flush=True)
    return report.bundle
