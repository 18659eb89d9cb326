"""The training-time teacher ([teacher] in a run config): an auxiliary head regresses precomputed face
descriptors in the training loss only (NaN rows masked), resumes from its checkpoints, leaves the baseline's
random streams alone and never reaches the exported graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from facial_demographics.datasets.cache import load_cache
from facial_demographics.datasets.errors import DataError, DataNotFoundError
from facial_demographics.training.checkpoint import Checkpoint
from facial_demographics.training.config import ConfigError, RunConfig, config_from_dict, load_config
from facial_demographics.training.data import FaceBatches, Labels, split_rows, teacher_targets
from facial_demographics.training.distributed import ShardedBatches
from facial_demographics.training.export import export_bundle
from facial_demographics.training.loop import EpochState, train
from facial_demographics.training.losses import MultiTaskLoss, teacher_loss
from facial_demographics.training.models import build_model, head_spec

from tests_support import make_cache

torch.set_num_threads(2)
DIM = 128
NAN_ROWS = (0, 5, 6, 9)  # row 0 is also the synthetic cache's unreadable face


class Crash(Exception):
    """Stands for a run killed after an epoch's checkpoint was written."""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The synthetic cache of tests_support plus synthetic descriptors: a per-gender direction plus noise (so
    a head can learn them), NaN rows as ``data descriptors`` leaves for faces without one."""
    cache_dir, split = make_cache(tmp_path_factory.mktemp("teacher"), n=48, size=32)
    index = load_cache(cache_dir).index
    rng = np.random.default_rng(1)
    directions = rng.normal(0, 1, (2, DIM))
    gender = index["gender"].fillna(0).astype(int).to_numpy()
    vectors = (directions[gender] + rng.normal(0, 0.5, (len(index), DIM))).astype(np.float32)
    vectors[list(NAN_ROWS)] = np.nan
    np.save(cache_dir / "descriptors.npy", vectors)
    return cache_dir, split


def _config(cache: tuple[Path, Path], model: dict[str, Any] | None = None, **teacher: Any) -> RunConfig:
    raw = load_config("tiny").to_dict()
    raw["data"].update(cache=str(cache[0]), split=str(cache[1]), input_size=32, limit_batches=2, limit_val=0)
    raw["train"].update(batch_size=8, eval_batch_size=16)
    raw["model"].update(model or {})
    raw["teacher"].update({"descriptors": "descriptors.npy", "weight": 0.5, **teacher})
    return config_from_dict(raw)


def _seed_cnn(cache: tuple[Path, Path], **teacher: Any) -> RunConfig:
    return _config(cache, {"name": "seed_cnn", "channels": [4, 8], "hidden": 8}, **teacher)


def test_teacher_loss_masks_rows_without_a_descriptor() -> None:
    pred = torch.randn(5, 4, requires_grad=True)
    target = torch.randn(5, 4)
    target[[1, 3]] = float("nan")
    for kind in ("cosine", "mse"):
        loss = teacher_loss(pred, target, kind)
        keep = [0, 2, 4]
        assert torch.isclose(loss, teacher_loss(pred[keep], target[keep], kind))
        (grad,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(grad).all() and grad[[1, 3]].abs().sum() == 0 and grad[keep].abs().sum() > 0
    none = teacher_loss(pred, torch.full((5, 4), float("nan")), "cosine")
    assert none.item() == 0.0 and none.requires_grad  # still part of the graph: backward works
    same = teacher_loss(target[[0]] * 3, target[[0]], "cosine")
    assert same.item() == pytest.approx(0.0, abs=1e-6)  # cosine: direction only
    assert teacher_loss(target[[0]] * 3, target[[0]], "mse").item() > 0  # mse: the raw vectors


def test_multitask_loss_adds_the_weighted_teacher_term_in_training_steps_only(cache: tuple[Path, Path]) -> None:
    cfg = _config(cache)
    loss = MultiTaskLoss(head_spec(cfg), cfg.loss, teacher=cfg.teacher)
    age, gender, aux = torch.randn(4, 101), torch.randn(4, 2), torch.randn(4, DIM)
    labels = Labels(torch.tensor([20.0, 30, 40, 50]), torch.tensor([0, 1, 0, 1]), torch.ones(4), torch.randn(4, DIM))
    with_teacher, without = loss(age, gender, labels, aux), loss(age, gender, labels)
    assert without.teacher is None and with_teacher.teacher is not None
    expected = without.total + cfg.teacher.weight * teacher_loss(aux, labels.teacher, "cosine")  # type: ignore[arg-type]
    assert torch.isclose(with_teacher.total, expected)
    plain = MultiTaskLoss(head_spec(cfg), cfg.loss)  # a config without [teacher] ignores the aux output
    assert torch.isclose(plain(age, gender, labels, aux).total, without.total)


def test_config_checks_the_teacher_section(cache: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="teacher.weight: must be > 0 when teacher.descriptors is set"):
        _config(cache, weight=0.0)
    with pytest.raises(ConfigError, match="teacher.loss: must be one of cosine, mse"):
        _config(cache, loss="l1")
    with pytest.raises(ConfigError, match="teacher.descriptors: must name"):
        _config(cache, descriptors="")
    shipped = load_config("v03_teacher")
    baseline, default = load_config("v03_baseline").to_dict(), load_config("default").to_dict()
    assert shipped.teacher.descriptors == "descriptors.npy" and shipped.teacher.weight > 0
    differ = {k for k, v in shipped.to_dict().items() if v != default[k]}
    assert differ == {"name", "description", "teacher"}  # the ablation changes the teacher alone
    assert {k for k, v in baseline.items() if v != default[k]} == {"name", "description"}


def test_descriptors_are_centred_and_checked(cache: tuple[Path, Path]) -> None:
    c = load_cache(cache[0])
    cfg = _config(cache)
    rows = split_rows(c, cfg, "train")
    targets = teacher_targets(c, cfg, rows)
    assert targets is not None and targets.shape == (48, DIM)
    known = rows[~np.isnan(targets[rows]).any(1)]
    np.testing.assert_allclose(targets[known].mean(0), 0, atol=1e-5)
    raw = teacher_targets(c, _config(cache, centre=False), rows)
    np.testing.assert_array_equal(raw, np.load(cache[0] / "descriptors.npy"))  # type: ignore[arg-type]
    assert np.isnan(targets[list(NAN_ROWS)]).all()
    with pytest.raises(DataError, match="teacher.dim is 64"):
        teacher_targets(c, _config(cache, dim=64), rows)
    with pytest.raises(DataNotFoundError, match="data descriptors"):
        teacher_targets(c, _config(cache, descriptors="missing.npy"), rows)


def test_batches_carry_descriptors_on_every_rank(cache: tuple[Path, Path]) -> None:
    c = load_cache(cache[0])
    cfg = _config(cache)
    rows = split_rows(c, cfg, "train")
    targets = teacher_targets(c, cfg, rows)
    assert targets is not None
    base = FaceBatches(c, rows, 8, shuffle=True, teacher=targets)
    pos = base.order(0)[:8]
    _, labels = base.batch_at(pos)
    assert labels.teacher is not None
    np.testing.assert_array_equal(labels.teacher.numpy(), targets[rows[pos]])
    _, shard = next(iter(ShardedBatches(base, 1, 2).epoch(0)))
    assert shard.teacher is not None
    np.testing.assert_array_equal(shard.teacher.numpy(), targets[rows[pos[1::2]]])


def test_teacher_head_leaves_the_baseline_weights_and_random_stream_alone(cache: tuple[Path, Path]) -> None:
    for model in ({}, {"name": "seed_cnn", "channels": [4, 8], "hidden": 8, "init": "keras"}):
        with_teacher, without = _config(cache, model), _config(cache, model, descriptors="", weight=0.0)
        torch.manual_seed(0)
        a = build_model(with_teacher, pretrained=False)
        after_a = torch.rand(3)
        torch.manual_seed(0)
        b = build_model(without, pretrained=False)
        after_b = torch.rand(3)
        assert torch.equal(after_a, after_b)
        sa, sb = a.state_dict(), b.state_dict()
        assert set(sa) - set(sb) == {"teacher_head.weight", "teacher_head.bias"}
        assert all(torch.equal(sa[k], sb[k]) for k in sb)
        x = torch.rand(2, 3, 32, 32) * 255
        a.train()
        assert len(a(x)) == 3 and a(x)[2].shape == (2, DIM)
        a.eval()
        assert len(a(x)) == 2  # validation and export: age and gender only


def test_two_step_smoke_run_exports_only_age_and_gender(cache: tuple[Path, Path], tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    result = train(_config(cache), tmp_path / "run", max_steps=2, progress=False, log=lambda _: None)
    row = result.history[-1]
    assert row["global_step"] == 2 and 0 < row["train_teacher_loss"] < 2.5  # cosine: in [0, 2]
    assert "train_teacher_loss" in pd.read_csv(tmp_path / "run" / "metrics.csv").columns
    ckpt = Checkpoint.load(result.last_checkpoint)
    assert ckpt.states["model"]["teacher_head.weight"].shape == (DIM, 1280)
    report = export_bundle(result.best_checkpoint, tmp_path / "bundle", cache=cache[0])
    assert report.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(report.bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["age_logits", "gender_logits"]
    import onnx

    graph = onnx.load(str(report.bundle / "model.onnx")).graph
    shapes = [tuple(init.dims) for init in graph.initializer]
    assert (DIM, 1280) not in shapes and (1280, DIM) not in shapes and (DIM,) not in shapes  # no aux head
    assert set(report.manifest["heads"]) == {"age", "gender"}


def test_stopped_teacher_run_resumes_like_an_uninterrupted_one(cache: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = _seed_cnn(cache, loss="mse")
    raw = cfg.to_dict()
    raw["train"]["epochs"] = 3
    cfg = config_from_dict(raw)
    full = train(cfg, tmp_path / "full", progress=False, log=lambda _: None)

    def crash_after_one(state: EpochState) -> None:
        if state.epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, tmp_path / "cut", on_epoch_end=crash_after_one, progress=False, log=lambda _: None)
    resumed = train(cfg, tmp_path / "cut", resume=tmp_path / "cut" / "last.pt", progress=False, log=lambda _: None)
    a, b = Checkpoint.load(full.last_checkpoint), Checkpoint.load(resumed.last_checkpoint)
    assert a.global_step == b.global_step == 6
    assert [h["train_teacher_loss"] for h in full.history] == pytest.approx(
        [h["train_teacher_loss"] for h in resumed.history], rel=1e-5)
    for key, value in a.states["model"].items():
        torch.testing.assert_close(value, b.states["model"][key], rtol=1e-5, atol=1e-6)
    assert "teacher_head.weight" in b.states["ema_model"]


def test_training_speed_bench_counts_a_teacher_head() -> None:
    """`python -m facial_demographics.training.bench` on a config with a [teacher]: the model answers three
    outputs in training mode, and the timed step runs all three."""
    from facial_demographics.training.bench import measure

    raw = load_config("tiny").to_dict()
    raw["data"].update(input_size=32)
    raw["train"].update(batch_size=4, eval_batch_size=4)
    raw["teacher"].update(descriptors="descriptors.npy", weight=0.5)
    rate = measure(config_from_dict(raw), steps=1)
    assert rate.train_images_per_s > 0 and rate.eval_images_per_s > 0
