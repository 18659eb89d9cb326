"""Cropped mode's detection (``--cropped`` and the training cache): 0.2.0's canvas against the current one.

For each UTKFace crop of a split, the face is detected on the padded canvas the way ``align_single`` does
it, once with 0.2.0's canvas (25 % padding, no size limit: a 300 px canvas for a 200 px crop) and once
with the current ``AlignmentConfig`` (10 % padding, shrunk to 192 px). Reported: detection CPU time per
image (one thread), faces found, and how far the five landmarks move between the two (in crop pixels, and
in pixels of the 112 px aligned face the model sees). Accuracy is ``evaluate --cropped``'s job (README).

    PYTHONPATH=src .venv/bin/python benchmarks/cropped_detection.py --split val --limit 500
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from detection import start
from rich.table import Table

from facial_demographics.alignment import (
    LANDMARK_WEIGHTS,
    AlignmentConfig,
    best_face,
    padded_canvas_detections,
    similarity_transform,
)
from facial_demographics.detection import DetectorConfig, FaceDetector
from facial_demographics.imaging import read_image

REPO = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "UTKFace")
    parser.add_argument("--split", default="val", help="train | val | test (default val)")
    parser.add_argument("--limit", type=int, default=500, help="images (a seeded sample; default 500)")
    args = parser.parse_args(argv)
    console, env = start(1)
    from facial_demographics.evaluation.evaluate import select_records

    records = select_records(args.dataset, split=args.split, limit=args.limit).records
    images = [read_image(r.path) for r in records]
    now = AlignmentConfig()
    configs = {"0.2.0 (pad 0.25, full size)": replace(now, canvas_pad=0.25, canvas_side=None),
               f"now (pad {now.canvas_pad:g}, ≤{now.canvas_side} px)": now}
    detector = FaceDetector(DetectorConfig.single_scale(threads=1, score_threshold=now.single_score_threshold))
    found, cpu_ms = {}, {}
    for label, cfg in configs.items():
        padded_canvas_detections(images[0], detector, cfg)  # warm-up
        started = time.process_time()
        found[label] = [best_face(padded_canvas_detections(im, detector, cfg), im.shape[1], im.shape[0])
                        for im in images]
        cpu_ms[label] = (time.process_time() - started) / len(images) * 1e3
    old, new = found.values()
    pairs = [(a, b) for a, b in zip(old, new, strict=True) if a is not None and b is not None]
    crop_shift = np.array([np.linalg.norm(a.landmarks - b.landmarks, axis=1).mean() for a, b in pairs])
    dst = now.destination()
    aligned_shift = np.array([_aligned_shift(a.landmarks, b.landmarks, dst) for a, b in pairs])
    table = Table(title=f"Cropped-mode detection, {len(images)} {args.split} crops")
    for col in ("canvas", "CPU ms / image", "faces found"):
        table.add_column(col, justify="left" if col == "canvas" else "right")
    for label in configs:
        table.add_row(label, f"{cpu_ms[label]:.2f}", f"{sum(f is not None for f in found[label])}")
    console.print(table)
    console.print(f"landmark shift, mean of the 5 points per face: crop pixels median {np.median(crop_shift):.2f}, "
                  f"p90 {np.percentile(crop_shift, 90):.2f}; in the 112 px aligned face median "
                  f"{np.median(aligned_shift):.2f}, p90 {np.percentile(aligned_shift, 90):.2f} "
                  f"({len(pairs)} faces found both ways); load average {env['load_average_1min']}", highlight=False)


def _aligned_shift(old: np.ndarray, new: np.ndarray, dst: np.ndarray) -> float:
    """Mean distance, in aligned-face pixels, between where the new fit puts the old fit's landmarks and the
    template: how far the crop the model sees moves."""
    matrix_new = similarity_transform(new, dst, LANDMARK_WEIGHTS)
    matrix_old = similarity_transform(old, dst, LANDMARK_WEIGHTS)
    points = np.hstack([old, np.ones((5, 1))])
    return float(np.linalg.norm(points @ matrix_new.T - points @ matrix_old.T, axis=1).mean())


if __name__ == "__main__":
    main()
