"""Small helpers shared by several test files."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

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


def make_cache(root: Path, n: int = 48, size: int = 64, seed: int = 0, *, unreadable: int = 1,
               split: bool = True, races: list[str | None] | None = None) -> tuple[Path, Path]:
    """Write a cache of synthetic "faces" whose brightness follows the age and whose tint follows the gender
    (so a network can learn them in a few steps), plus a key,split CSV. Returns (cache dir, split csv).
    ``races``: the index's race column (default: all unknown)."""
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
        "race": [None] * n if races is None else races, "source": "synthetic", "status": status,
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


# --------------------------------------------------------------------------- IMDB-WIKI .mat files


def datenum(d: date) -> float:
    """MATLAB datenum of a date (what wiki.mat stores as dob)."""
    return float(d.toordinal() + 366)


def entry(path: str, dob: float, taken: int, gender: float = 1.0, name: str = "A Person",
          face: float = 3.0, second: float = math.nan) -> dict[str, Any]:
    return {"full_path": path, "dob": dob, "photo_taken": taken, "gender": gender, "name": name,
            "face_score": face, "second_face_score": second}


def matlab_cell(values: list[Any]) -> np.ndarray:
    """A MATLAB cell array (1-D object array) holding ``values`` as they are."""
    cell = np.empty(len(values), dtype=object)
    cell[:] = values
    return cell


def write_wiki_mat(path: Path, entries: list[dict[str, Any]], struct: str = "wiki",
                   image_root: Path | None = None) -> Path:
    """Write a wiki.mat-like file (1x1 struct of 1xN fields, cells of strings) and the image files."""
    import scipy.io

    data = {
        "dob": np.array([e["dob"] for e in entries], dtype=float),
        "photo_taken": np.array([e["photo_taken"] for e in entries], dtype=float),
        "full_path": matlab_cell([e["full_path"] for e in entries]),
        "gender": np.array([e["gender"] for e in entries], dtype=float),
        "name": matlab_cell([e["name"] for e in entries]),
        "face_location": matlab_cell([np.array([[10.0, 10.0, 90.0, 90.0]]) for _ in entries]),
        "face_score": np.array([e["face_score"] for e in entries], dtype=float),
        "second_face_score": np.array([e["second_face_score"] for e in entries], dtype=float),
    }
    scipy.io.savemat(str(path), {struct: data})
    if image_root is not None:
        for e in entries:
            (image_root / e["full_path"]).parent.mkdir(parents=True, exist_ok=True)
            (image_root / e["full_path"]).write_bytes(b"jpeg")
    return path


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (a script folder, not a package) as module ``name``."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module
