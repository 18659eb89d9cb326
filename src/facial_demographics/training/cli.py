"""Command functions the CLI wires in: ``facial-demographics train`` and ``facial-demographics export``."""

from __future__ import annotations

from pathlib import Path

from .config import RunConfig, config_from_dict, load_config, with_overrides
from .data import load_cache
from .distributed import DistributedError, current, init_from_env, launch, shutdown
from .loop import TrainResult, load_checkpoint, run_dir_of, train
from .steps import StepLog


def _resolve(config: Path | None, resume: Path | None) -> RunConfig:
    if config is not None:
        return load_config(config)
    if resume is None:
        raise ValueError("give --config (a TOML run config) or --resume (a last.pt checkpoint)")
    return config_from_dict(load_checkpoint(resume)["config"])


def train_command(config: Path | None, resume: Path | None = None, lr: float | None = None,
                  epochs: int | None = None, out: Path | None = None, cache: Path | None = None,
                  split: Path | None = None, max_steps: int | None = None,
                  progress: bool = True, nproc: int = 1) -> TrainResult | None:
    """Train a run described by a TOML config; CLI values override the config's.

    Without ``out`` the run goes to ``runs/<config name>`` (or, when resuming, the checkpoint's run dir).
    ``nproc > 1`` trains with DistributedDataParallel in that many processes on this machine (the
    global batch stays ``train.batch_size``); under ``torchrun`` each process joins its group here.

    Returns:
        The result (None in the launching process of ``nproc > 1``: the ranks hold it).
    """
    cfg = with_overrides(_resolve(config, resume), lr=lr, epochs=epochs, cache=cache, split=split)
    if out is None:
        out = run_dir_of(resume) if resume is not None else Path("runs") / cfg.name
    joined_here = not current().enabled
    ddp = init_from_env()  # under torchrun: join the group it set up
    if nproc > 1 and not ddp.enabled:
        _check_shareable(cfg, nproc)  # fail here with one line, not in every rank
        launch(nproc, train_command, config=config, resume=resume, lr=lr, epochs=epochs, out=out, cache=cache,
               split=split, max_steps=max_steps, progress=progress)
        return None
    steps = None
    if ddp.is_main:
        ckpt = load_checkpoint(resume) if resume is not None else None
        steps = StepLog(Path(out) / "steps.csv", None if ckpt is None else str(ckpt["round"]),
                        0 if ckpt is None else int(ckpt["global_step"]))
    try:
        result = train(cfg, Path(out), resume=resume, max_steps=max_steps, progress=progress, on_step=steps)
    finally:
        if steps is not None:
            steps.close()
        if ddp.enabled and joined_here:
            shutdown()
    best = result.best
    if ddp.is_main:
        print(f"done: best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}; "
              f"checkpoints {result.best_checkpoint} and {result.last_checkpoint}; curves, metrics and "
              f"steps.csv in {out}" + (f" ({ddp.world_size} processes)" if ddp.enabled else ""), flush=True)
    return result


def _check_shareable(cfg: RunConfig, nproc: int) -> None:
    """What would stop every rank at start: a global batch the ranks cannot share, or a missing cache.

    Raises:
        DistributedError, DataError: with the message each rank would print.
    """
    if cfg.train.batch_size % nproc:
        raise DistributedError(f"train.batch_size {cfg.train.batch_size} is the global batch: it must be a "
                               f"multiple of --nproc {nproc}")
    load_cache(cfg.data.cache)


def export_command(ckpt: Path, out: Path, cache: Path | None = None, opset: int = 17) -> Path:
    """Export a checkpoint to an ONNX model bundle and check it against torch; returns the bundle dir."""
    from .export import export_bundle

    report = export_bundle(ckpt, out, cache=cache, opset=opset)
    print(f"exported {report.bundle} ({report.onnx_bytes / 1e6:.2f} MB); max |torch - onnxruntime| on "
          f"{report.faces} faces: {report.max_abs_diff:.2e}", flush=True)
    return report.bundle
