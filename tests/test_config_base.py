"""Config inheritance: ``base`` merges tables key by key; cycles and bad values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from facial_demographics.training.config import ConfigError, load_config


def test_variant_inherits_everything_it_does_not_set(tmp_path: Path) -> None:
    (tmp_path / "variant.toml").write_text('base = "default"\nname = "variant"\n[data]\ninput_size = 128\n')
    variant, default = load_config(tmp_path / "variant.toml"), load_config("default")
    assert variant.name == "variant" and variant.data.input_size == 128
    assert variant.data.cache == default.data.cache  # same table, other keys kept
    assert variant.optim == default.optim and variant.train == default.train


def test_base_cycle_and_bad_base_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('base = "b"\n')
    (tmp_path / "b.toml").write_text('base = "a"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text("base = 3\n")
    with pytest.raises(ConfigError, match="base"):
        load_config(tmp_path / "c.toml")


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_validates(path: Path) -> None:
    cfg = load_config(path.stem)  # by name, as users pass them
    assert cfg.name == path.stem
