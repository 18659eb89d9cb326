"""Interval calibration on the validation split: coverage moves to the target, the bundle stays valid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from facial_demographics.model import ModelBundle
from facial_demographics.training.calibrate import calibrate_bundle

from tests_support import copy_bundle


def _cache(root: Path, size: int, n: int) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    faces = np.lib.format.open_memmap(root / "faces.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    faces[:] = rng.integers(0, 256, faces.shape, dtype=np.uint8)
    faces.flush()
    index = pd.DataFrame({"key": [f"k{i}" for i in range(n)], "path": "", "age": rng.uniform(1, 90, n),
                          "gender": 0.0, "race": None, "source": "t", "status": "ok", "det_score": 1.0,
                          "fallback": False})
    index.to_parquet(root / "index.parquet")
    (root / "meta.json").write_text(json.dumps({"size": size, "margin": 0.0, "template": "utkface5"}))
    split = pd.DataFrame({"key": index["key"], "split": ["val"] * (n - 5) + ["test"] * 5})
    split.to_csv(root / "split.csv", index=False)
    return root


def test_calibration_hits_the_target_on_val(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    cache = _cache(tmp_path / "cache", 64, 200)
    cal = calibrate_bundle(bundle, cache, cache / "split.csv", target=0.5)
    assert cal.faces == 195  # the test rows are not used
    assert abs(cal.coverage_after - 0.5) <= abs(cal.coverage_before - 0.5)
    assert abs(cal.coverage_after - 0.5) < 0.1
    loaded = ModelBundle.load(bundle)  # hash still valid, temperature recorded
    assert loaded.manifest["heads"]["age"]["temperature"] == cal.temperature
    assert loaded.manifest["training"]["interval_calibration"]["split"] == "val"
