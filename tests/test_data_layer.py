"""One data layer: training, evaluation, robustness and calibration read a cache and a split file through
the same two readers, so a file is accepted or refused the same way by every command."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facial_demographics.datasets.cache import load_cache, split_faces
from facial_demographics.datasets.errors import DataError, DataNotFoundError
from facial_demographics.datasets.splits import read_split
from facial_demographics.errors import UserError
from facial_demographics.evaluation.evaluate import select_records
from facial_demographics.evaluation.robustness import run_robustness
from facial_demographics.training.calibrate import calibrate_bundle
from facial_demographics.training.config import RunConfig, config_from_dict, load_config
from facial_demographics.training.data import split_rows

from tests_support import copy_bundle, make_cache


def _config(cache: Path, split: Path) -> RunConfig:
    raw = load_config("tiny").to_dict()
    raw["data"].update(cache=str(cache), split=str(split), age_range=None)
    return config_from_dict(raw)


def _utk_folder(root: Path) -> Path:
    root.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / f"{20 + i}_{i % 2}_0_2017011617452{i}.jpg")
    return root


def test_a_repeated_key_is_refused_by_every_command(tmp_path: Path, tiny_bundle: Path) -> None:
    """Regression: training used to drop the repeat silently and train on the first row's split, while
    evaluate, robustness and calibration refused the same file."""
    cache, split = make_cache(tmp_path, n=24, size=64)
    lines = split.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("face0005,"))
    repeated = tmp_path / "repeated.csv"
    repeated.write_text("\n".join([*lines, "face0005,test"]) + "\n")  # face0005 is also "train" above
    message = re.escape(f"{repeated}: row {len(lines)}: key 'face0005' repeated (first in row {first}")

    with pytest.raises(DataError, match=message):
        split_rows(load_cache(cache), _config(cache, repeated), "train")
    with pytest.raises(DataError, match=message):
        select_records(_utk_folder(tmp_path / "utk"), split_file=repeated)
    with pytest.raises(DataError, match=message):
        run_robustness([None], cache, repeated, "val", None, None)
    with pytest.raises(DataError, match=message):
        calibrate_bundle(copy_bundle(tiny_bundle, tmp_path / "bundle"), cache, repeated)
    # The file without the repeat trains, and is read the same way by every command.
    assert len(split_rows(load_cache(cache), _config(cache, split), "train")) > 0


def test_training_and_calibration_select_the_same_faces(tmp_path: Path) -> None:
    cache_dir, split = make_cache(tmp_path, n=40, size=32)
    cache = load_cache(cache_dir)
    rows = split_rows(cache, _config(cache_dir, split), "val")
    faces, index = split_faces(cache, split, "val")
    assert index.index.tolist() == rows.tolist() and 0 not in rows  # row 0 is unreadable
    assert np.array_equal(faces, cache.faces[rows])
    assert set(read_split(split)) == set(cache.index["key"])


def test_split_file_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="nope.csv: split file not found") as missing:
        read_split(tmp_path / "nope.csv")
    assert isinstance(missing.value, FileNotFoundError) and isinstance(missing.value, UserError)
    bom = tmp_path / "bom.csv"
    bom.write_bytes("key,split\na.jpg,test\n".encode("utf-8-sig"))  # as a spreadsheet saves it
    assert read_split(bom) == {"a.jpg": "test"}
    bad = tmp_path / "bad.csv"
    bad.write_text("key,split\na.jpg,holdout\n")
    with pytest.raises(DataError, match="row 1 \\(a.jpg\\): split 'holdout'") as refused:
        read_split(bad)
    assert isinstance(refused.value, ValueError) and isinstance(refused.value, UserError)


def test_cache_reader_names_the_broken_part(tmp_path: Path) -> None:
    cache_dir, _ = make_cache(tmp_path, n=8, size=32)
    with pytest.raises(DataNotFoundError, match="faces.npy missing"):
        load_cache(tmp_path / "elsewhere")
    np.save(cache_dir / "faces.npy", np.zeros((8, 32, 32, 3), np.float32))
    with pytest.raises(DataError, match="faces.npy: expected uint8"):
        load_cache(cache_dir)
    np.save(cache_dir / "faces.npy", np.zeros((7, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="index has 8 rows but faces.npy has 7"):
        load_cache(cache_dir)
    pd.read_parquet(cache_dir / "index.parquet").drop(columns="status").to_parquet(cache_dir / "index.parquet")
    with pytest.raises(DataError, match=re.escape("missing columns ['status']")):
        load_cache(cache_dir)
