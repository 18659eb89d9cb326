"""Config loading and validation: unknown keys and bad values fail early with the key named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from facial_demographics.training.config import (
    ConfigError,
    config_from_dict,
    load_config,
    resolve_config_path,
    with_overrides,
)


@pytest.mark.parametrize("name", ["default", "tiny", "seed", "seed_wiki"])
def test_packaged_configs_load(name: str) -> None:
    cfg = load_config(name)
    assert cfg.name == name
    assert resolve_config_path(f"configs/{name}.toml").name == f"{name}.toml"


def test_flip_budget_config_spends_the_shipped_models_compute() -> None:
    """v04_flip_budget differs from 0.4.0's recipe only in what a step sees: as many steps of as many rows
    (32 faces + their 32 mirrors against 64 faces), the same warm-up in steps, one pass at validation."""
    shipped, flip = load_config("v04_lite1"), load_config("v04_flip_budget")
    assert flip.loss.flip_consistency > 0 and not flip.train.tta_flip and shipped.train.tta_flip
    assert 2 * flip.train.batch_size == shipped.train.batch_size
    assert 2 * flip.train.epochs == shipped.train.epochs  # twice the steps per epoch, half the epochs
    assert 2 * flip.schedule.warmup_epochs == shipped.schedule.warmup_epochs
    same = ("model", "heads", "optim", "augment", "data", "teacher")
    assert all(getattr(flip, k) == getattr(shipped, k) for k in same)
    assert replace(flip.loss, flip_consistency=0.0) == shipped.loss
    keep = ("seed", "ema", "ema_decay", "select", "threads", "channels_last", "precision")
    assert all(getattr(flip.train, k) == getattr(shipped.train, k) for k in keep)


def test_seed_config_matches_the_report() -> None:
    cfg = load_config("seed")
    assert (cfg.model.name, cfg.heads.age, cfg.heads.gender) == ("seed_cnn", "buckets5", True)
    assert cfg.data.input_size == 198 and cfg.train.batch_size == 32
    s = cfg.schedule
    assert (cfg.optim.lr, s.name, s.step_epochs, s.gamma) == (0.008, "step", 5, 0.5)
    rounds = [(r.epochs, r.lr, r.init_from) for r in cfg.round_plan()]
    assert rounds == [(22, 0.008, "best"), (22, 0.002, "best")]
    assert cfg.data.class_weights == "balanced"
    assert 0.2 <= cfg.model.dropout <= 0.35
    a = cfg.augment
    assert (a.rotation, a.brightness, a.translate, a.scale) == (30.0, [0.6, 1.4], 0.2, [0.5, 1.5])
    assert a.hflip == 0.5
    wiki = load_config("seed_wiki")
    assert (wiki.data.input_size, wiki.heads.age, wiki.data.age_range, wiki.train.batch_size) == (
        180, "regression", [21.0, 75.0], 64)


@pytest.mark.parametrize(("patch", "message"), [
    ({"optim": {"lr": 0}}, "optim.lr: must be > 0"),
    ({"optim": {"lr": -1e-3}}, "optim.lr: must be > 0"),
    ({"optim": {"name": "adagrad"}}, "optim.name: must be one of"),
    ({"optim": {"eps": 0}}, "optim.eps: must be > 0"),
    ({"optim": {"rho": 1.0}}, "optim.rho: must be in"),
    ({"model": {"init": "he"}}, "model.init: must be one of"),
    ({"optim": {"lr": "fast"}}, "optim.lr: expected a number"),
    ({"train": {"epochs": 0}}, "train.epochs: must be >= 1"),
    ({"train": {"batch_size": 2.5}}, "train.batch_size: expected an integer"),
    ({"train": {"ema": "yes"}}, "train.ema: expected true or false"),
    ({"heads": {"age": "ordinal"}}, "heads.age: must be one of"),
    ({"augment": {"hflip": 1.5}}, "augment.hflip: must be a probability"),
    ({"augment": {"brightness": [1.4, 0.6]}}, "augment.brightness: must satisfy"),
    ({"data": {"age_range": [21]}}, "data.age_range: must be [low, high]"),
    ({"schedule": {"name": "exp"}}, "schedule.name: must be one of"),
    ({"rounds": [{"lr": 0.0}]}, "rounds[0].lr: must be > 0"),
    ({"rounds": [{"init_from": "first"}]}, "rounds[0].init_from"),
])
def test_bad_values_name_the_key(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(patch)


@pytest.mark.parametrize(("patch", "key"), [
    ({"optim": {"learning_rate": 0.1}}, "optim.learning_rate"),
    ({"trian": {}}, "trian"),
    ({"rounds": [{"lrr": 1.0}]}, r"rounds\[0\].lrr"),
])
def test_unknown_keys_are_refused(patch: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key}: unknown key"):
        config_from_dict(patch)


def test_bad_file_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[optim]\nlr = -1\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: optim\.lr: must be > 0"):
        load_config(path)
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_cli_overrides_win() -> None:
    cfg = with_overrides(load_config("seed"), lr=0.01, epochs=3, cache="/c", split="/s.csv")
    assert (cfg.optim.lr, cfg.train.epochs, cfg.data.cache, cfg.data.split) == (0.01, 3, "/c", "/s.csv")
    # --epochs applies to every round; an explicit round lr stays.
    assert [(r.epochs, r.lr) for r in cfg.round_plan()] == [(3, 0.01), (3, 0.002)]
    with pytest.raises(ConfigError, match="optim.lr"):
        with_overrides(cfg, lr=-1.0)
    # A checkpoint's stored config round-trips through the validator.
    assert config_from_dict(cfg.to_dict()) == cfg
