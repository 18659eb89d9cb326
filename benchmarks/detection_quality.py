"""Detection quality and speed of the candidate detectors on the generated scenes, in one run.

Candidates: our RetinaFace-MobileNet0.25 as shipped in 0.2.0 (one pass at 960 px, threshold 0.8),
the current default (a pixel-budget fine pass plus a padded coarse pass, threshold 0.6), the same
with a larger pixel budget, and the peer age-and-gender 2.0's detector (dlib's HOG frontal face
detector with no upsampling, exactly as the peer calls it) when the peer is installed. Scenes come from
``facial_demographics.evaluation.scenes`` (UTKFace train-split faces, fixed seed); see
``facial-demographics evaluate-detection`` for one detector with the HTML report.

    benchmarks/setup_peer.sh    # once: .venv-bench with the peer
    .venv-bench/bin/python benchmarks/detection_quality.py --dataset ../shared/datasets/UTKFace --scenes 400

dlib's boxes are drawn tighter than RetinaFace's (brows to chin), so at IoU 0.5 the peer loses some
faces it did find; the ``IoU ≥ 0.3`` column shows how many.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from detection import start, write_json
from rich.table import Table

from facial_demographics.detection import DetectorConfig, FaceDetector
from facial_demographics.evaluation import detection_metrics
from facial_demographics.evaluation.detection_eval import BenchmarkSettings, benchmark, load_pool
from facial_demographics.types import Detection

Detect = Callable[[np.ndarray], list[Detection]]


def candidates(threads: int | None) -> list[tuple[str, Detect]]:
    ours = [
        ("ours 0.2.0: 1 pass ≤ 960 px, thr 0.8", DetectorConfig.single_scale(score_threshold=0.8, threads=threads)),
        ("ours default: 0.52 MP + coarse, thr 0.6", DetectorConfig(threads=threads)),
        ("ours 1.0 MP + coarse, thr 0.6", DetectorConfig(pixel_budget=1_000_000, threads=threads)),
    ]
    out: list[tuple[str, Detect]] = [(name, FaceDetector(cfg).detect) for name, cfg in ours]
    peer = peer_detector()
    if peer is not None:
        out.append(("peer age-and-gender 2.0: dlib HOG", peer))
    return out


def peer_detector() -> Detect | None:
    """dlib's HOG detector called as age-and-gender 2.0 calls it (no upsampling), or None if absent."""
    try:
        import age_and_gender  # noqa: F401  (the peer must be installed for the comparison to mean anything)
        import dlib
    except ImportError:
        return None
    hog = dlib.get_frontal_face_detector()
    no_landmarks = np.full((5, 2), np.nan, np.float32)

    def detect(image: np.ndarray) -> list[Detection]:
        rects, scores, _ = hog.run(image, 0)
        return [Detection((float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)),
                          float(s), no_landmarks) for r, s in zip(rects, scores, strict=True)]

    return detect


def loose_recall(outcomes: Sequence[detection_metrics.SceneOutcome]) -> float | None:
    """Recall at IoU ≥ 0.3 (box-convention tolerant) over faces ≥ 16 px."""
    again = [detection_metrics.match_scene(o.scene, o.detections, iou_match=0.3) for o in outcomes]
    return detection_metrics.summarize(again)["recall"]


def render(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Face detection on generated scenes (recall at IoU ≥ 0.5)")
    bands = [b[0] for b in detection_metrics.SIZE_BANDS]
    for col in ["detector", *[f"{b} px" for b in bands], "≥ 32 px", "IoU ≥ 0.3", "precision", "dup / face",
                "false / face-free img", "close-ups: 1 box", "landmark NME", "ms 640×480", "ms 1920×1080"]:
        table.add_column(col, justify="left" if col == "detector" else "right")
    for r in rows:
        m = r["metrics"]

        def pct(v: float | None) -> str:
            return "–" if v is None else f"{100 * v:.1f}"

        by_size = m["recall_by_size"]
        nme = m["landmark_nme_mean"]
        table.add_row(r["name"], *[pct(by_size.get(b, {}).get("recall")) for b in bands],
                      pct(m["recall_32_plus"]), pct(r["recall_iou03"]), pct(m["precision"]),
                      f"{100 * m['duplicates_per_face']:.2f} %", f"{m['false_positives_per_face_free_image']:.3f}",
                      pct(m["closeups"]["exactly_one_box"]), "–" if nme is None else f"{nme:.3f}",
                      f"{m['ms_per_image']['640x480']:.1f}", f"{m['ms_per_image']['1920x1080']:.1f}")
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("../shared/datasets/UTKFace"))
    parser.add_argument("--scenes", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per image size")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    console, env = start(args.threads)
    console.width = max(console.width, 200)  # the table has 16 columns
    settings = BenchmarkSettings(scenes=args.scenes, seed=args.seed, timing_repeats=args.repeats)
    pool = load_pool(args.dataset, settings)
    rows = []
    for name, detect in candidates(args.threads):
        with console.status(f"{name}: {args.scenes} scenes…"):
            metrics, outcomes = benchmark(detect, pool, settings)
        rows.append({"name": name, "metrics": metrics, "recall_iou03": loose_recall(outcomes)})
        console.print(f"done: {name}")
    console.print(render(rows))
    console.print(f"{args.scenes} scenes, seed {args.seed}, pool {len(pool)} faces; {env['cpu_count']} CPUs, "
                  f"load average {env['load_average_1min']}")
    write_json(console, args.json, {"benchmark": "detection_quality", "environment": env,
                                    "settings": settings.__dict__, "rows": rows})


if __name__ == "__main__":
    main()
