"""Multi-process training (``train --nproc 2``, DistributedDataParallel over gloo on the CPU) on the ``tiny``
config: the ranks share each global batch of today's order, the loss curve is the single-process one up to
what per-rank BatchNorm statistics and augmentation draws change (checked exactly against a
single-process replay of the same rank slices), rank 0 alone writes, and ``--resume`` continues the run
exactly where an uninterrupted one would be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from facial_demographics.datasets.cache import load_cache
from facial_demographics.training.checkpoint import Checkpoint, seed_everything
from facial_demographics.training.config import RunConfig, load_config, with_overrides
from facial_demographics.training.data import FaceBatches, split_rows, train_input
from facial_demographics.training.distributed import (
    DistContext,
    DistributedBatchSampler,
    DistributedError,
    ShardedBatches,
    current,
    launch,
    resolve_device,
)
from facial_demographics.training.loop import EpochState, _setup_data, train
from facial_demographics.training.models import build_model
from facial_demographics.training.optim import make_optimizer, make_scheduler
from facial_demographics.training.run import run_training

from tests_support import make_cache

EPOCHS = 2  # two short epochs of tiny (4 steps each): one to compare, and one more to resume into
# tiny as shipped, but from the ImageNet weights as real runs start: from random weights the first
# steps' BatchNorm statistics (8 faces a rank against 16) move the loss too far for a curve comparison.
_TINY_TEXT = (Path(__file__).resolve().parents[1] / "configs" / "tiny.toml").read_text()
assert "pretrained = false" in _TINY_TEXT


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(_TINY_TEXT.replace("pretrained = false", "pretrained = true"))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    # 128 faces: 80 train faces = 5 global batches of 16, of which tiny takes 4 per epoch.
    return make_cache(tmp_path_factory.mktemp("ddp"), n=128, size=32)


def _cfg(data: tuple[Path, Path], tiny: Path) -> RunConfig:
    return with_overrides(load_config(tiny), cache=data[0], split=data[1], epochs=EPOCHS)


def _steps(run: Path) -> np.ndarray:
    return pd.read_csv(run / "steps.csv")["loss"].to_numpy()


def test_rank_slices_rebuild_the_single_process_batches(data: tuple[Path, Path], tiny: Path) -> None:
    cache = load_cache(data[0])
    cfg = _cfg(data, tiny)
    rows = split_rows(cache, cfg, "train")
    for n, world in ((len(rows), 2), (len(rows), 3), (36, 2), (35, 2)):
        base = FaceBatches(cache, rows[:n], 8, shuffle=True, seed=7)
        samplers = [DistributedBatchSampler(base, r, world) for r in range(world)]
        for epoch in (0, 1):
            for s in samplers:
                s.set_epoch(epoch)
            order = base.order(epoch)
            steps = list(zip(*samplers, strict=True))
            # A last batch that cannot give each rank two faces (35 = 4 x 8 + 3, not 36) is dropped.
            assert len(steps) == len(base) - (n == 35) == len(samplers[0])
            for b, slices in enumerate(steps):
                assert sorted(np.concatenate(slices)) == sorted(order[b * 8:(b + 1) * 8])
    assert ShardedBatches(FaceBatches(cache, rows, 16, shuffle=True), 1, 2).batch_size == 16
    drawn = FaceBatches(cache, rows, 16, shuffle=True, sampler="balanced")
    assert list(ShardedBatches(drawn, 1, 2).order(3)) == list(drawn.order(3))  # every rank draws the same order
    with pytest.raises(DistributedError, match="multiple of the 3 processes"):
        DistContext(rank=0, world_size=3).shard(FaceBatches(cache, rows, 16, shuffle=True))


def _replay_two_ranks(cfg: RunConfig) -> np.ndarray:
    """What DDP with two ranks must compute, in one process: each step, both ranks' slices through the
    same model (BatchNorm statistics per slice), each slice augmented from its rank's own RNG stream,
    the two slice losses averaged into one gradient."""
    setup = _setup_data(cfg, lambda _: None)
    torch.set_num_threads(1)  # as each of the two ranks on this 2-thread config (thread counts change the sums)
    seed_everything(cfg.train.seed)
    model = build_model(cfg)  # as the loop builds a fresh run
    streams = [torch.get_rng_state()]
    DistContext(rank=1, world_size=2).seed_rank(cfg.train.seed)
    streams.append(torch.get_rng_state())
    shards = [ShardedBatches(setup.train, r, 2) for r in (0, 1)]
    opt = make_optimizer(model, cfg, cfg.optim.lr)
    sched = make_scheduler(opt, cfg, cfg.optim.lr, len(shards[0]), EPOCHS * len(shards[0]))
    losses = []
    model.train()
    for epoch in range(EPOCHS):
        for slices in zip(shards[0].epoch(epoch), shards[1].epoch(epoch), strict=True):
            opt.zero_grad(set_to_none=True)
            total = seen = 0.0
            for r, (faces, labels) in enumerate(slices):
                torch.set_rng_state(streams[r])
                x = train_input(faces, setup.augment, cfg.data.input_size, cfg.train.channels_last)
                streams[r] = torch.get_rng_state()
                loss = setup.loss(*model(x), labels).total
                (loss / 2).backward()
                total, seen = total + len(faces) * loss.item(), seen + len(faces)
            opt.step()
            sched.step()
            losses.append(total / seen)
    return np.array(losses)


class _Stop(Exception):
    """Stands for a rank killed once the first epoch's checkpoint is written."""


def _train_stopping_after_one_epoch(cfg: RunConfig, out: Path) -> None:
    """A rank's run that stops (as if killed) once the first epoch's checkpoint is written."""

    def stop(state: EpochState) -> None:
        if state.epoch == 1:
            raise _Stop

    try:
        train(cfg, out, on_epoch_end=stop, progress=False, log=lambda _: None)
    except _Stop:
        pass


def test_nproc_2_matches_one_process_and_resumes(data: tuple[Path, Path], tiny: Path, tmp_path: Path) -> None:
    cfg = _cfg(data, tiny)
    assert cfg.augment.enabled and cfg.train.ema and cfg.train.batch_size == 16  # tiny as shipped
    common = {"cache": data[0], "split": data[1], "epochs": EPOCHS, "progress": False}
    one = run_training(tiny, out=tmp_path / "one", **common)
    two = tmp_path / "two"
    result = run_training(tiny, out=two, nproc=2, **common)  # read back from what rank 0 wrote
    assert result.last_checkpoint == two / "last.pt" and len(result.history) == len(one.history) == EPOCHS
    single, ddp = _steps(tmp_path / "one"), _steps(two)
    assert len(ddp) == len(single) == EPOCHS * 4
    assert list(pd.read_csv(two / "steps.csv")["images"]) == [16] * len(ddp)  # the global batch, each step

    # Exact: two ranks compute what one process replaying their slices and RNG streams computes
    # (float summation order aside: gloo's all-reduce, thread counts).
    np.testing.assert_allclose(ddp, _replay_two_ranks(cfg), rtol=1e-4)
    # Against one process at the same global batch: the same samples each step, so the curves agree
    # except for BatchNorm statistics over 8 faces instead of 16 and different augmentation draws.
    # The first step (identical weights) shows that alone; later steps also carry the weights apart.
    rel = np.abs(ddp - single) / single
    assert rel[0] < 0.1 and rel.max() < 0.25, rel
    assert abs(ddp[:4].mean() - single[:4].mean()) / single[:4].mean() < 0.05  # the first epoch's mean loss
    assert ddp[-4:].mean() < ddp[:4].mean() and single[-4:].mean() < single[:4].mean()  # both learn

    # Rank 0 alone wrote files, and the checkpoint holds both ranks' RNG states.
    last = Checkpoint.load(two / "last.pt")
    assert len(last.states["rng"]["ranks"]) == 2 and last.global_step == EPOCHS * 4
    assert not any(p.name.endswith(".tmp") for p in two.iterdir())
    assert len(pd.read_csv(two / "metrics.csv")) == EPOCHS

    # Stopped after epoch 1 and resumed: the same steps, losses and weights as the uninterrupted run.
    cut = tmp_path / "cut"
    launch(2, _train_stopping_after_one_epoch, cfg=cfg, out=cut)
    assert Checkpoint.load(cut / "last.pt").epoch == 1
    run_training(None, resume=cut / "last.pt", nproc=2, progress=False)
    resumed = Checkpoint.load(cut / "last.pt")
    np.testing.assert_allclose(pd.read_csv(cut / "steps.csv")["loss"], ddp[4:], rtol=1e-5)
    assert [h["global_step"] for h in resumed.history] == [4, 8]
    for key, value in last.states["model"].items():
        torch.testing.assert_close(resumed.states["model"][key], value, rtol=1e-5, atol=1e-6)


def test_nproc_refuses_a_global_batch_it_cannot_share(data: tuple[Path, Path], tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(DistributedError, match="multiple of --nproc 3"):
        run_training(tiny, out=tmp_path / "x", cache=data[0], split=data[1], nproc=3, progress=False)


def test_device_names_resolve_or_fail_with_the_reason() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DistributedError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(DistributedError, match=f"sees {seen} CUDA device"):
        resolve_device(f"cuda:{seen}")


def test_the_run_log_names_the_device(data: tuple[Path, Path], tiny: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    train(_cfg(data, tiny), tmp_path / "run", max_steps=1, log=lines.append, progress=False)
    assert any(line.endswith(", on cpu") and "threads" in line for line in lines), lines


def test_a_gpu_asked_for_where_there_is_none_stops_before_training(data: tuple[Path, Path], tiny: Path,
                                                                   tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DistributedError, match="--device cuda: PyTorch sees 0 CUDA"):
        run_training(tiny, out=tmp_path / "x", cache=data[0], split=data[1], device="cuda", progress=False)
    assert not (tmp_path / "x" / "steps.csv").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/device_ablation.py runs it)")
def test_one_process_trains_on_the_gpu_and_saves_cpu_loadable_checkpoints(data: tuple[Path, Path], tiny: Path,
                                                                          tmp_path: Path) -> None:
    common = {"cache": data[0], "split": data[1], "epochs": EPOCHS, "progress": False}
    gpu = run_training(tiny, out=tmp_path / "gpu", device="cuda", **common)
    assert current().device == "cpu"  # the call gave the device back
    run_training(tiny, out=tmp_path / "cpu", device="cpu", **common)
    g, c = _steps(tmp_path / "gpu"), _steps(tmp_path / "cpu")
    # Same weights, data order and augmentation parameters (kornia draws them from the CPU's stream); the
    # noise op draws from the GPU's, and the arithmetic differs, so the curves agree only roughly.
    assert abs(g[0] - c[0]) / c[0] < 0.1, (g, c)
    assert g[-4:].mean() < g[:4].mean()
    ckpt = Checkpoint.load(gpu.last_checkpoint)
    assert {t.device.type for t in ckpt.eval_weights.values()} == {"cpu"}
    resumed = run_training(None, resume=gpu.last_checkpoint, epochs=EPOCHS + 1, device="cuda", progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
