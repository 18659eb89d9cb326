"""A training run as the ``train`` command starts it: one process, N local processes (DDP) or one rank of
a ``torchrun`` job; with ``steps.csv`` written next to the per-epoch metrics."""

from __future__ import annotations

from pathlib import Path

from ..datasets.cache import load_cache
from .checkpoint import Checkpoint
from .config import ConfigError, RunConfig, load_config, with_overrides
from .distributed import DistributedError, current, init_from_env, launch, resolve_device, shutdown, use_device
from .loop import TrainResult, round_dir, train
from .steps import StepLog


def run_training(config: Path | str | None, resume: Path | None = None, lr: float | None = None,
                 epochs: int | None = None, out: Path | None = None, cache: Path | None = None,
                 split: Path | None = None, max_steps: int | None = None, progress: bool = True,
                 nproc: int = 1, precision: str | None = None, device: str = "auto") -> TrainResult:
    """Train a run described by a TOML config (or continue one); the given values override the config's.

    Args:
        config: a TOML path or a packaged config name; None with ``resume`` takes the checkpoint's.
        resume: a ``last.pt`` to continue from.
        out: the run directory (default ``runs/<config name>``, or the checkpoint's run when resuming).
        precision: "fp32" or "bf16" (``train.precision``); a resumed run may switch.
        device: where one process trains: "auto" (the first GPU if PyTorch sees one), "cpu", "cuda",
            "cuda:N". Multi-process ranks each take their own GPU when there are enough, else the CPU.
        nproc: processes on this machine, trained with DistributedDataParallel (the global batch stays
            ``train.batch_size``); under ``torchrun`` each process joins its group instead.

    Returns:
        The run's result (with ``nproc > 1``, read back from the checkpoint rank 0 wrote).

    Raises:
        ConfigError: neither a config nor a checkpoint, or a bad config.
        DistributedError: a global batch the processes cannot share, or a device that is not here.
    """
    if config is None and resume is None:
        raise ConfigError("give --config (a TOML run config) or --resume (a last.pt checkpoint)")
    ckpt = Checkpoint.load(resume) if resume is not None else None  # read once, used three ways
    base = load_config(config) if config is not None else ckpt.config  # type: ignore[union-attr]
    cfg = with_overrides(base, lr=lr, epochs=epochs, cache=cache, split=split, precision=precision)
    run_dir = Path(out) if out is not None else ckpt.run_dir if ckpt is not None else Path("runs") / cfg.name
    joined_here = not current().enabled
    ddp = init_from_env()  # under torchrun: join the group it set up
    if nproc > 1 and not ddp.enabled:
        _check_shareable(cfg, nproc)  # fail here with one line, not in every rank
        launch(nproc, run_training, config=config, resume=resume, lr=lr, epochs=epochs, out=run_dir, cache=cache,
               split=split, max_steps=max_steps, progress=progress, precision=precision)
        return _result_on_disk(cfg, run_dir)
    if not ddp.enabled:
        ddp = use_device(resolve_device(device))
    steps = None
    if ddp.is_main:
        steps = StepLog(run_dir / "steps.csv", None if ckpt is None else ckpt.round,
                        0 if ckpt is None else ckpt.global_step)
    try:
        return train(cfg, run_dir, resume=ckpt, max_steps=max_steps, progress=progress, on_step=steps)
    finally:
        if steps is not None:
            steps.close()
        if joined_here:
            shutdown()  # leave the group, or the device this call chose


def _check_shareable(cfg: RunConfig, nproc: int) -> None:
    """What would stop every rank at start: a global batch the ranks cannot share, or a missing cache.

    Raises:
        DistributedError, DataError: with the message each rank would print.
    """
    if cfg.train.batch_size % nproc:
        raise DistributedError(f"train.batch_size {cfg.train.batch_size} is the global batch: it must be a "
                               f"multiple of --nproc {nproc}")
    load_cache(cfg.data.cache)


def _result_on_disk(cfg: RunConfig, out: Path) -> TrainResult:
    """The result of a run the ranks finished, from the last round's ``last.pt`` (rank 0 wrote it)."""
    plan = cfg.round_plan()
    dirs = [round_dir(out, plan, i) for i in range(len(plan))]
    run_dir = next(d for d in reversed(dirs) if (d / "last.pt").is_file())
    last = Checkpoint.load(run_dir / "last.pt")
    best = last.best.to_dict()
    return TrainResult(out, run_dir / "best.pt", run_dir / "last.pt", best, last.history,
                       float(last.metrics.get("images_per_s", 0.0)))
