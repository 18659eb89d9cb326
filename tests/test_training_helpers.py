"""Shared helpers for the training tests: a small aligned-face cache in the documented format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

UTKFACE = Path(os.environ.get("FD_UTKFACE_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" /
                              "datasets" / "UTKFace"))


def make_cache(root: Path, n: int = 48, size: int = 64, seed: int = 0, *, unreadable: int = 1,
               split: bool = True) -> tuple[Path, Path]:
    """Write a cache of synthetic "faces" whose brightness follows the age and whose tint follows the gender
    (so a network can learn them in a few steps), plus a key,split CSV. Returns (cache dir, split csv)."""
    rng = np.random.default_rng(seed)
    ages = rng.uniform(1, 90, n).round()
    genders = rng.integers(0, 2, n).astype(float)
    genders[3] = np.nan  # one face with an unknown gender
    faces = np.empty((n, size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = 40 + 1.8 * ages[i] + 20 * np.sin(6 * xx + i) * np.cos(5 * yy)
        red, blue = (40, 0) if genders[i] == 1 else (0, 40)
        img = np.stack([base + red, base, base + blue], -1)
        faces[i] = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    status = np.array(["ok"] * n, dtype=object)
    status[:unreadable] = "unreadable"
    faces[:unreadable] = 0
    keys = [f"face{i:04d}" for i in range(n)]
    index = pd.DataFrame({
        "key": keys, "path": [f"/nowhere/{k}.jpg" for k in keys], "age": ages, "gender": genders,
        "race": [None] * n, "source": "synthetic", "status": status,
        "det_score": np.where(status == "ok", 0.99, 0.0), "fallback": False,
    })
    cache = root / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / "faces.npy", faces)
    index.to_parquet(cache / "index.parquet")
    (cache / "meta.json").write_text(json.dumps({"size": size, "margin": 0.2, "template": "arcface5"}))
    split_csv = root / "split.csv"
    parts = np.where(np.arange(n) % 4 == 0, "val", "train")
    parts[np.arange(n) % 8 == 1] = "test"
    pd.DataFrame({"key": keys, "split": parts}).to_csv(split_csv, index=False)
    return cache, split_csv


def utkface_images(count: int) -> list[Path]:
    """A few real UTKFace chips, or a clean skip when the dataset is not here."""
    if not UTKFACE.is_dir():
        pytest.skip(f"UTKFace not found at {UTKFACE} (set FD_UTKFACE_DIR)")
    return sorted(UTKFACE.glob("*.jpg"))[:count]
