"""Issue 15's teacher: do dlib's face descriptors carry the signal we want to distil, and how fast are they?

Reads ``descriptors.npy`` of a cache (``facial-demographics data descriptors CACHE``) and fits a logistic
regression (numpy, Newton's method with a small L2 penalty, standardised inputs) from the train split's
descriptors to gender, then prints gender accuracy on the val split, overall and by age band, next to the
shipped ``default`` model on the same val faces (the cache's aligned crops are its input) and the average
of the two P(female). ``--fit-box N`` refits the face-rectangle constants of ``descriptors.landmark_box``
on N random faces (dlib's HOG detector against our landmarks). ``--time N`` also computes descriptors for N
evenly spaced cache rows in a temporary folder (one worker; the rate includes loading dlib's models, about a
second) and prints rows/s with the load average, since other work on the machine moves it.

    PYTHONPATH=src .venv/bin/python benchmarks/teacher_descriptors.py --cache cache/utkface-112 \
        --split splits/utkface.csv [--time 200] [--fit-box 400] [--json out/teacher.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from facial_demographics.datasets.cache import load_cache
from facial_demographics.datasets.splits import read_split

BANDS = (("all ages", 0, 200), ("0-12", 0, 12), ("13-19", 13, 19), ("20+", 20, 200))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 25) -> np.ndarray:
    """Weights (with the bias last) of an L2-penalised logistic regression, by Newton's method."""
    xb = np.c_[x, np.ones(len(x))]
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) / len(y) + l2 * np.r_[w[:-1], 0.0]
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / len(y) + l2 * np.diag(np.r_[np.ones(len(w) - 1), 0.0])
        w -= np.linalg.solve(hess, grad)
    return w


def model_p_female(faces: np.ndarray) -> np.ndarray:
    from facial_demographics.model import AgeGenderModel, ModelBundle
    from facial_demographics.registry import resolve

    model = AgeGenderModel(ModelBundle.load(resolve("default")), threads=1)
    return np.concatenate([model.predict(faces[i:i + 64]).p_female for i in range(0, len(faces), 64)])


def time_descriptors(cache_dir: Path, n: int, root: Path | None) -> dict[str, float]:
    """Rows/s of ``compute_descriptors`` (1 worker) on n evenly spaced rows of the cache, in a temp folder."""
    from facial_demographics.datasets.descriptors import compute_descriptors

    cache = load_cache(cache_dir)
    rows = np.unique(np.linspace(0, len(cache.index) - 1, n).round().astype(int))
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "cache"
        sub.mkdir()
        np.save(sub / "faces.npy", np.asarray(cache.faces[rows]))
        cache.index.iloc[rows].reset_index(drop=True).to_parquet(sub / "index.parquet")
        shutil.copy(cache_dir / "meta.json", sub / "meta.json")
        load = os.getloadavg()[0]
        start = time.perf_counter()
        run = compute_descriptors(sub, root=root, workers=1)
        seconds = time.perf_counter() - start
    return {"rows": len(rows), "computed": run.computed, "seconds": seconds, "rows_per_s": len(rows) / seconds,
            "load_1min_before": load, "load_1min_after": os.getloadavg()[0]}


def fit_box(cache_dir: Path, n: int, root: Path | None) -> dict[str, float]:
    """Refit ``descriptors.BOX_*`` on n random faces: where dlib's HOG face detector puts its rectangle
    relative to our five landmarks (medians over the photos with exactly one detection), and the IoU of
    the rectangles the shipped constants give with the detector's."""
    import dlib

    from facial_demographics.datasets import descriptors as desc

    index = load_cache(cache_dir).index
    picked = index[index["status"] == "ok"].sample(min(n, len(index)), random_state=0)
    detector = dlib.get_frontal_face_detector()
    fits, ious = [], []
    for _, row in picked.iterrows():
        found = detector(desc._read(row["path"], root), 1)
        if len(found) != 1:
            continue
        b = found[0]
        lm = row[[f"lm{i}{a}" for i in range(5) for a in "xy"]].to_numpy(float).reshape(5, 2)
        centre = lm.mean(0)
        s = float(np.sqrt(((lm - centre) ** 2).sum(1).mean()))
        box = np.array([b.left(), b.top(), b.right(), b.bottom()], float)
        fits.append([(box[2] - box[0] + box[3] - box[1]) / 2 / s, ((box[0] + box[2]) / 2 - centre[0]) / s,
                     ((box[1] + box[3]) / 2 - centre[1]) / s])
        ours = np.array(desc.landmark_box(lm), float)
        inter = np.prod(np.clip(np.minimum(box[2:], ours[2:]) - np.maximum(box[:2], ours[:2]), 0, None))
        ious.append(inter / (np.prod(box[2:] - box[:2]) + np.prod(ours[2:] - ours[:2]) - inter))
    side, dx, dy = np.median(np.array(fits), axis=0)
    return {"faces": len(fits), "side": float(side), "dx": float(dx), "dy": float(dy),
            "shipped": [desc.BOX_SIDE, desc.BOX_DX, desc.BOX_DY],
            "iou_median": float(np.median(ious)), "iou_p5": float(np.percentile(ious, 5))}


def gender_signal(cache_dir: Path, split_file: Path) -> list[dict[str, float | str]]:
    cache = load_cache(cache_dir)
    vectors = np.load(cache_dir / "descriptors.npy").astype(np.float64)
    index = cache.index
    split = index["key"].map(read_split(split_file)).to_numpy()
    usable = ~np.isnan(vectors).any(1) & index["gender"].notna().to_numpy() & cache.readable.to_numpy()
    train, val = np.flatnonzero(usable & (split == "train")), np.flatnonzero(usable & (split == "val"))
    mean, std = vectors[train].mean(0), vectors[train].std(0)
    gender = index["gender"].to_numpy(dtype=float)
    w = fit_logistic((vectors[train] - mean) / std, gender[train])
    p_desc = 1.0 / (1.0 + np.exp(-np.c_[(vectors[val] - mean) / std, np.ones(len(val))] @ w))
    p_model = model_p_female(np.asarray(cache.faces[val]))
    truth, ages = gender[val], index["age"].to_numpy(dtype=float)[val]
    def accuracy(p: np.ndarray, band: np.ndarray) -> float:
        return float(((p[band] > 0.5) == truth[band]).mean()) if band.any() else float("nan")

    rows: list[dict[str, float | str]] = []
    for name, lo, hi in BANDS:
        band = (ages >= lo) & (ages <= hi)
        rows.append({"band": name, "faces": int(band.sum()), "train_faces": len(train),
                     "descriptors_lr": accuracy(p_desc, band), "default_model": accuracy(p_model, band),
                     "average": accuracy((p_desc + p_model) / 2, band)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("cache/utkface-112"))
    parser.add_argument("--split", type=Path, default=Path("splits/utkface.csv"))
    parser.add_argument("--time", type=int, default=0, help="also time descriptors for this many rows")
    parser.add_argument("--fit-box", type=int, default=0, help="also refit the box constants on this many faces")
    parser.add_argument("--root", type=Path, default=None, help="folder the index's relative paths start from")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    console = Console()
    result: dict[str, object] = {"load_1min": os.getloadavg()[0], "cpus": os.cpu_count()}
    rows = gender_signal(args.cache, args.split)
    result["gender_val"] = rows
    table = Table(title=f"Gender accuracy on the val split ({args.cache}); the regression saw "
                        f"{rows[0]['train_faces']} train faces")
    for col in ("band", "faces", "LR on dlib descriptors", "default model", "average of the two"):
        table.add_column(col, justify="left" if col == "band" else "right")
    for r in rows:
        cells = [r["descriptors_lr"], r["default_model"], r["average"]]
        table.add_row(str(r["band"]), str(r["faces"]),
                      *("" if np.isnan(float(c)) else f"{100 * float(c):.2f} %" for c in cells))
    console.print(table)
    if args.time:
        timing = time_descriptors(args.cache, args.time, args.root)
        result["timing"] = timing
        console.print(f"descriptors: {timing['rows']} rows in {timing['seconds']:.1f} s = {timing['rows_per_s']:.2f} "
                      f"rows/s (1 worker); load average {timing['load_1min_before']:.2f} -> "
                      f"{timing['load_1min_after']:.2f} on {os.cpu_count()} CPUs")
    if args.fit_box:
        box = fit_box(args.cache, args.fit_box, args.root)
        result["box"] = box
        console.print(f"box: dlib's detector over {box['faces']} faces: side {box['side']:.3f}, dx {box['dx']:.3f}, "
                      f"dy {box['dy']:.3f} (shipped {box['shipped']}); IoU of the shipped box with the "
                      f"detector's: median {box['iou_median']:.3f}, 5th percentile {box['iou_p5']:.3f}")
    console.print(f"1-minute load average at start: {result['load_1min']:.2f} ({os.cpu_count()} CPUs)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
