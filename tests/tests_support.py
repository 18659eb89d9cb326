"""Small helpers shared by several test files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd


def copy_bundle(bundle: Path, target: Path) -> Path:
    """A private copy of a bundle that a test may modify."""
    shutil.copytree(bundle, target)
    return target


def simple_cache(root: Path, size: int, n: int, faces: np.ndarray | None = None) -> Path:
    """A face cache of n faces (random noise unless ``faces`` is given) with random ages, all male; the last
    5 rows are the test split, the rest val (``root / "split.csv"``)."""
    root.mkdir()
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(root / "faces.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    out[:] = rng.integers(0, 256, out.shape, dtype=np.uint8) if faces is None else faces
    out.flush()
    index = pd.DataFrame({"key": [f"k{i}" for i in range(n)], "path": "", "age": rng.uniform(1, 90, n),
                          "gender": 0.0, "race": None, "source": "t", "status": "ok", "det_score": 1.0,
                          "fallback": False})
    index.to_parquet(root / "index.parquet")
    (root / "meta.json").write_text(json.dumps({"size": size, "margin": 0.0, "template": "utkface5"}))
    split = pd.DataFrame({"key": index["key"], "split": ["val"] * (n - 5) + ["test"] * 5})
    split.to_csv(root / "split.csv", index=False)
    return root
