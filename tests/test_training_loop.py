"""The training loop on a small synthetic cache: loss goes down, metrics/curves/checkpoints are written,
a run stopped after an epoch resumes exactly where an uninterrupted run would be, rounds chain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from facial_demographics.datasets.cache import load_cache
from facial_demographics.datasets.errors import DataError
from facial_demographics.labels import AGE_BANDS, AGE_GROUPS
from facial_demographics.training.checkpoint import Checkpoint
from facial_demographics.training.config import ConfigError, RunConfig, config_from_dict, load_config
from facial_demographics.training.data import FaceBatches, sampling_probabilities, sampling_strata, split_rows
from facial_demographics.training.loop import EpochState, train

from tests_support import make_cache

torch.set_num_threads(2)


class Crash(Exception):
    """Stands for a run killed after an epoch's checkpoint was written."""


def _tiny(cache: Path, split: Path, **changes: Any) -> RunConfig:
    raw = load_config("tiny").to_dict()
    raw["data"].update(cache=str(cache), split=str(split), input_size=32, limit_batches=3, limit_val=0)
    raw["train"].update(batch_size=8, eval_batch_size=16)
    for section, values in changes.items():
        raw[section].update(values)
    return config_from_dict(raw)


def _small_seed(cache: Path, split: Path, **changes: Any) -> RunConfig:
    """A seed_cnn a few thousand parameters big: the loop's behaviour at a fraction of the time."""
    cfg = _tiny(cache, split, model={"name": "seed_cnn", "channels": [4, 8], "hidden": 8}, **changes)
    return cfg


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cache(tmp_path_factory.mktemp("cache"), n=48, size=32)


def test_split_rows_skip_unreadable_and_filter_ages(cache: tuple[Path, Path]) -> None:
    c = load_cache(cache[0])
    cfg = _tiny(*cache)
    train_rows = split_rows(c, cfg, "train")
    assert 0 not in train_rows  # row 0 is unreadable
    val_rows = split_rows(c, cfg, "val")
    assert not set(train_rows) & set(val_rows)
    filtered = split_rows(c, _tiny(*cache, data={"age_range": [21.0, 75.0]}), "train")
    ages = c.index["age"].to_numpy()[filtered]
    assert len(filtered) < len(train_rows) and ages.min() >= 21 and ages.max() <= 75
    with pytest.raises(DataError, match="split file not found"):
        split_rows(c, _tiny(cache[0], cache[1].with_name("nope.csv")), "train")
    with pytest.raises(DataError, match="faces.npy missing"):
        load_cache(cache[0].parent / "elsewhere")


def test_batches_are_reproducible_and_balanced_sampler_evens_buckets(cache: tuple[Path, Path]) -> None:
    c = load_cache(cache[0])
    rows = split_rows(c, _tiny(*cache), "train")
    b = FaceBatches(c, rows, 8, shuffle=True, seed=3)
    first = [labels.age.tolist() for _, labels in b.epoch(0)]
    assert first == [labels.age.tolist() for _, labels in b.epoch(0)]
    assert first != [labels.age.tolist() for _, labels in b.epoch(1)]
    faces, labels = next(iter(b.epoch(0)))
    expected = np.stack([c.faces[r] for r in rows[b.order(0)[:8]]])
    assert np.array_equal(faces.numpy(), expected)  # faces stay aligned with their labels
    balanced = FaceBatches(c, rows, 8, shuffle=True, seed=3, sampler="balanced")
    draws = np.concatenate([balanced.buckets[balanced.order(e)] for e in range(40)])
    shares = np.bincount(draws[draws >= 0]) / (draws >= 0).sum()
    present = shares[shares > 0]
    assert present.max() - present.min() < 0.1  # roughly equal share for each present bucket


def test_race_age_strata_and_draw_probabilities() -> None:
    ages = np.array([3.0, 30.0, 30.0, 30.0, 70.0, np.nan, 30.0])
    races = pd.Series(["Asian", "White", "White", "White", "Black", "White", np.nan])
    strata, count = sampling_strata(ages, races, "race_age")
    assert count == 3 * len(AGE_BANDS)  # Asian, Black, White (sorted) x six bands
    assert strata[5] == strata[6] == -1  # unknown age, unknown race
    assert strata[1] == strata[2] == strata[3] and len({strata[0], strata[1], strata[4]}) == 3
    full = sampling_probabilities(strata, count, 1.0)
    assert full.sum() == pytest.approx(1.0)
    # power 1: each of the three known strata gets the same share; one White adult weighs a third of the Asian child
    assert full[0] == pytest.approx(full[1:4].sum()) == pytest.approx(full[4])
    root = sampling_probabilities(strata, count, 0.5)
    assert root[0] / root[1] == pytest.approx(3 ** 0.5)  # square-root compromise
    assert full[5] == pytest.approx(full[[0, 1, 2, 3, 4]].mean())  # unknown: the known faces' average weight
    assert sampling_strata(ages, races, "balanced")[1] == len(AGE_GROUPS)


def test_race_age_sampler_evens_race_by_age_strata(tmp_path: Path) -> None:
    races: list[str | None] = ["White"] * 60 + ["Black"] * 20 + ["Asian"] * 8 + [None] * 8
    cache = make_cache(tmp_path, n=len(races), size=16, races=races)
    c = load_cache(cache[0])
    rows = split_rows(c, _tiny(*cache), "train")
    b = FaceBatches(c, rows, 8, shuffle=True, seed=3, sampler="race_age")
    strata, _ = sampling_strata(b.ages, c.index["race"].iloc[rows], "race_age")
    draws = np.concatenate([strata[b.order(e)] for e in range(60)])
    shares = np.bincount(draws[draws >= 0]) / (draws >= 0).sum()
    present = shares[shares > 0]
    assert len(present) > 2 and present.max() - present.min() < 0.1
    assert list(b.order(4)) == list(FaceBatches(c, rows, 8, shuffle=True, seed=3, sampler="race_age").order(4))


def test_tiny_config_trains_and_loss_goes_down(cache: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = _tiny(*cache, train={"epochs": 5}, augment={"enabled": False}, optim={"lr": 0.003})
    result = train(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 5 and losses[-1] < losses[0]
    for name in ("metrics.csv", "metrics.json", "loss.png", "metrics.png", "last.pt", "best.pt",
                 "config.json"):
        assert (tmp_path / "run" / name).is_file(), name
    table = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(table["epoch"]) == [1, 2, 3, 4, 5]
    for col in ("val_mae", "val_cs5", "val_bucket_acc", "val_gender_acc", "images_per_s"):
        assert table[col].notna().all(), col
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())[-1]["global_step"] == 15
    best = Checkpoint.load(tmp_path / "run" / "best.pt")
    assert best.best.value == pytest.approx(table["val_mae"].min())


def test_stopped_run_resumes_like_an_uninterrupted_one(cache: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = _small_seed(*cache, train={"epochs": 4})  # EMA and flip TTA on, as in tiny.toml
    assert cfg.train.ema and cfg.augment.enabled
    full = train(cfg, tmp_path / "full", progress=False, log=lambda _: None)

    def crash_after_two(state: EpochState) -> None:
        if state.epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, tmp_path / "cut", on_epoch_end=crash_after_two, progress=False, log=lambda _: None)
    mid = Checkpoint.load(tmp_path / "cut" / "last.pt")
    assert (mid.epoch, mid.global_step) == (2, 6)
    resumed = train(cfg, tmp_path / "cut", resume=tmp_path / "cut" / "last.pt", progress=False,
                    log=lambda _: None)
    a, b = Checkpoint.load(full.last_checkpoint), Checkpoint.load(resumed.last_checkpoint)
    assert a.global_step == b.global_step == 12
    assert a.states["optimizer"]["param_groups"][0]["lr"] == b.states["optimizer"]["param_groups"][0]["lr"]
    assert [h["lr"] for h in full.history] == [h["lr"] for h in resumed.history]
    assert [h["global_step"] for h in resumed.history] == [3, 6, 9, 12]
    for key, value in a.states["model"].items():
        torch.testing.assert_close(value, b.states["model"][key], rtol=1e-5, atol=1e-6)


def test_two_rounds_from_one_command(cache: tuple[Path, Path], tmp_path: Path) -> None:
    raw = _small_seed(*cache, train={"epochs": 2, "ema": False}).to_dict()
    raw["schedule"] = {"name": "step", "step_epochs": 1, "gamma": 0.5}
    raw["rounds"] = [{"name": "round1"}, {"name": "round2", "lr": 0.001, "init_from": "last"}]
    cfg = config_from_dict({**raw, "rounds": raw["rounds"]})
    result = train(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    assert [h["round"] for h in result.history] == ["round1"] * 2 + ["round2"] * 2
    r2 = Checkpoint.load(tmp_path / "run" / "round2" / "last.pt")
    # Round 2 starts fresh at its own lr and halves it each epoch; its global step restarts.
    assert r2.states["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.001 * 0.25)
    assert r2.global_step == 6
    assert len(pd.read_csv(tmp_path / "run" / "metrics.csv")) == 4
    assert len(pd.read_csv(tmp_path / "run" / "round1" / "metrics.csv")) == 2
    assert (tmp_path / "run" / "metrics.png").is_file()


def test_seed_cnn_buckets_and_regression_train(cache: tuple[Path, Path], tmp_path: Path) -> None:
    raw = load_config("seed").to_dict()
    raw["data"].update(cache=str(cache[0]), split=str(cache[1]), input_size=32, limit_batches=2)
    raw["model"]["channels"] = [8, 16]
    raw["train"].update(epochs=1, batch_size=8)
    raw["rounds"] = []
    result = train(config_from_dict(raw), tmp_path / "seed", progress=False, log=lambda _: None)
    assert 0 <= result.history[-1]["val_bucket_acc"] <= 1
    raw.update(heads={"age": "regression", "gender": False}, loss={"age": 1.0, "gender": 0.0})
    raw["train"]["select"] = "val_mae"
    result = train(config_from_dict(raw), tmp_path / "wiki", progress=False, log=lambda _: None)
    assert np.isnan(result.history[-1]["val_gender_acc"])
    # The regressor starts near the median age, so its MAE is already of the order of the age spread.
    assert result.history[-1]["val_mae"] < 40


def test_compare_runs_summarises_best_epochs(cache: tuple[Path, Path], tmp_path: Path) -> None:
    from facial_demographics.training.compare import compare_runs, write_comparison

    cfg = _small_seed(*cache, train={"epochs": 2, "ema": False})
    train(cfg, tmp_path / "a", progress=False, log=lambda _: None)
    raw = cfg.to_dict()
    raw["name"], raw["heads"]["age"] = "buckets", "buckets5"
    train(config_from_dict(raw), tmp_path / "b", progress=False, log=lambda _: None)
    table, written = write_comparison([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp")
    assert [p.name for p in written] == ["comparison.csv", "comparison.md", "comparison.png"]
    assert list(table["age_head"]) == ["distribution", "buckets5"]
    metrics = pd.read_csv(tmp_path / "a" / "metrics.csv")
    assert table.loc[0, "val_mae"] == pytest.approx(metrics["val_mae"].min())
    assert table.loc[0, "best_epoch"] == int(metrics["val_mae"].idxmin()) + 1
    for name in ("comparison.csv", "comparison.md", "comparison.png"):
        assert (tmp_path / "cmp" / name).is_file()
    with pytest.raises(FileNotFoundError, match="not a training run directory"):
        compare_runs([tmp_path / "cmp"])


def test_bf16_autocast_trains_close_to_fp32_and_a_run_can_switch(cache: tuple[Path, Path], tmp_path: Path) -> None:
    from facial_demographics.training.run import run_training

    fp32 = _small_seed(*cache, train={"epochs": 2}, augment={"enabled": False})
    bf16 = _small_seed(*cache, train={"epochs": 2, "precision": "bf16"}, augment={"enabled": False})
    a = train(fp32, tmp_path / "fp32", progress=False, log=lambda _: None)
    b = train(bf16, tmp_path / "bf16", progress=False, log=lambda _: None)
    # Same batches and init; bfloat16 has 8 bits of mantissa, so the losses agree to about 1 %.
    for x, y in zip(a.history, b.history, strict=True):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=0.03)
    weights = Checkpoint.load(b.last_checkpoint).states["model"]
    assert all(v.dtype != torch.bfloat16 for v in weights.values())  # the weights stay fp32
    # An fp32 run resumed in bf16 (the CLI's --precision) records the switch in its config.
    switched = run_training(None, resume=a.last_checkpoint, epochs=3, precision="bf16", progress=False)
    assert switched.history[-1]["epoch"] == 3
    assert Checkpoint.load(switched.last_checkpoint).config.train.precision == "bf16"
    with pytest.raises(ConfigError, match="train.precision"):
        _small_seed(*cache, train={"precision": "fp16"})


def test_gender_balance_per_dataset_weighs_a_mostly_male_dataset_and_trains(tmp_path: Path) -> None:
    cache_dir, split = make_cache(tmp_path / "mixed", n=48, size=32)
    index = pd.read_parquet(cache_dir / "index.parquet")
    # the second half becomes a mostly male "morph": all men but two women
    index.loc[24:, "source"], index.loc[24:, "gender"] = "morph", 0.0
    index.loc[[30, 40], "gender"] = 1.0
    index.to_parquet(cache_dir / "index.parquet")
    cfg = _tiny(cache_dir, split, data={"gender_balance": "per_dataset"}, train={"epochs": 1})
    c = load_cache(cache_dir)
    rows = split_rows(c, cfg, "train")
    batches = FaceBatches(c, rows, 8, shuffle=True, gender_balance="per_dataset")
    assert batches.gender_weight is not None
    morph = batches.sources == "morph"
    men = batches.gender_weight[morph & (batches.genders == 0)]
    women = batches.gender_weight[morph & (batches.genders == 1)]
    assert men.sum() == pytest.approx(women.sum()) and women.min() > 1 > men.max()
    assert "morph: men" in batches.gender_weight_summary() and "synthetic: men" in batches.gender_weight_summary()
    _, labels = next(batches.epoch(0))
    assert labels.gender_weight is not None and labels.gender_weight.shape == labels.gender.shape
    assert FaceBatches(c, rows, 8, shuffle=True).gender_weight is None  # the default leaves the loss as it was
    lines: list[str] = []
    result = train(cfg, tmp_path / "run", progress=False, log=lines.append)
    assert any(line.startswith("gender-loss weights: ") and "balance per_dataset" in line for line in lines)
    assert np.isfinite(result.history[-1]["train_loss"])
    with pytest.raises(ConfigError, match="data.gender_balance"):
        _tiny(cache_dir, split, data={"gender_balance": "sometimes"})


def test_child_gender_weight_multiplies_the_gender_term_of_children_only(tmp_path: Path) -> None:
    cache_dir, split = make_cache(tmp_path / "kids", n=48, size=32)
    index = pd.read_parquet(cache_dir / "index.parquet")
    index["age"] = np.tile([3.0, 10.0, 12.9, 13.0, 30.0, 70.0], 8)  # three children (0-12), three not
    index.loc[5, "age"] = np.nan  # unknown age: not a child
    index.to_parquet(cache_dir / "index.parquet")
    c = load_cache(cache_dir)
    cfg = _tiny(cache_dir, split, data={"child_gender_weight": 2.5}, train={"epochs": 1})
    rows = split_rows(c, cfg, "train")
    plain = FaceBatches(c, rows, 8, shuffle=True)
    kids = FaceBatches(c, rows, 8, shuffle=True, child_gender_weight=2.5)
    assert plain.gender_weight is None and kids.gender_weight is not None
    child = ~np.isnan(kids.ages) & (kids.ages < 13)
    assert child.any() and (~child).any()
    known = kids.genders >= 0
    assert np.allclose(kids.gender_weight[child & known], 2.5) and np.allclose(kids.gender_weight[~child & known], 1)
    assert (kids.gender_weight[~known] == 0).all()
    # on top of the per-dataset balance: children weigh 2.5 times what the balance alone gives them
    both = FaceBatches(c, rows, 8, shuffle=True, gender_balance="per_dataset", child_gender_weight=2.5)
    balanced = FaceBatches(c, rows, 8, shuffle=True, gender_balance="per_dataset")
    assert both.gender_weight is not None and balanced.gender_weight is not None
    assert np.allclose(both.gender_weight, np.where(child, 2.5, 1.0) * balanced.gender_weight)
    assert "children 0-12" in both.gender_weight_summary()
    lines: list[str] = []
    result = train(cfg, tmp_path / "run", progress=False, log=lines.append)
    assert any("children 0-12 x2.5" in line for line in lines)
    assert np.isfinite(result.history[-1]["train_loss"])
    with pytest.raises(ConfigError, match="data.child_gender_weight"):
        _tiny(cache_dir, split, data={"child_gender_weight": 0})
