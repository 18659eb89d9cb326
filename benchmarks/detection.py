"""Face-detection latency: ``FaceDetector.detect`` per image at three sizes, and ``detect_batch`` on 16 crops,
for the current detector and the 0.2.0 one (single pass at 960 px) in the same run, so the ratio holds
even on a busy machine.

Every image holds a real face (scikit-image's astronaut, resized and placed on a grey canvas), so the
timings include decoding the detections, not just the network. Each case is warmed up, then run
``--repeats`` times; the table shows the median and the 90th percentile.

    python benchmarks/detection.py --repeats 50 --threads 2 --json out/detection.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from facial_demographics.detection import DetectorConfig, FaceDetector

SIZES = ((200, 200), (640, 480), (1920, 1080))
BATCH = 16


def astronaut() -> np.ndarray:
    """A real 512x512 RGB photo with one face, bundled with scikit-image (no download)."""
    try:
        from skimage import data
    except ImportError:
        sys.exit("scikit-image is needed for the test photo: pip install scikit-image")
    return np.ascontiguousarray(data.astronaut(), dtype=np.uint8)


def photo(width: int, height: int, copies: int = 1) -> np.ndarray:
    """A ``width``x``height`` grey canvas holding ``copies`` astronauts, each half the size of the last.

    The first copy fills the height (or the width, if narrower), so every size has a face the
    detector can find; extra copies add smaller faces, as in a group photo.
    """
    canvas = np.full((height, width, 3), 128, dtype=np.uint8)
    source = astronaut()
    side = min(width, height)
    x = 0
    for _ in range(copies):
        if side < 32 or x + side > width:
            break
        canvas[:side, x : x + side] = cv2.resize(source, (side, side), interpolation=cv2.INTER_AREA)
        x += side
        side //= 2
    return canvas


class ContainmentOnly(FaceDetector):
    """Our detector with the part test before issue 32: any box mostly inside a larger kept one is dropped."""

    def _keep(self, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, order: list[int]) -> list[int]:
        kept: list[int] = []
        for k in sorted(order, key=lambda k: -float(np.prod(boxes[k, 2:] - boxes[k, :2]))):
            area = max(float(np.prod(boxes[k, 2:] - boxes[k, :2])), 1e-9)
            shares = [float(np.prod(np.maximum(0, np.minimum(boxes[k, 2:], boxes[j, 2:])
                                               - np.maximum(boxes[k, :2], boxes[j, :2])))) / area for j in kept]
            if not any(share >= self.config.containment for share in shares):
                kept.append(k)
        return kept


def time_runs(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def environment(threads: int | None) -> dict[str, Any]:
    """What the numbers depend on; the load average flags a busy machine."""
    import onnxruntime as ort

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "load_average_1min": round(load, 2),
    }


def start(threads: int | None) -> tuple[Console, dict[str, Any]]:
    """The console and the environment record; warns up front when the machine is busy."""
    console = Console()
    env = environment(threads)
    cpus = env["cpu_count"] or 1
    if env["load_average_1min"] > 0.5 * cpus:
        console.print(
            f"[yellow]warning: 1-minute load average {env['load_average_1min']} on {cpus} CPUs: "
            "other work is running, these numbers are distorted[/yellow]"
        )
    return console, env


def write_json(console: Console, path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")
        console.print(f"wrote {path}")


@dataclass
class Row:
    case: str
    faces: int  # faces found in one image (for the batch: in all of it)
    images: int  # images per timed call
    median_ms: float  # per image
    p90_ms: float  # per image
    images_per_s: float


def measure(detector: FaceDetector, repeats: int, baseline: FaceDetector | None = None,
            baseline_name: str = "0.2.0") -> list[Row]:
    rows = []
    for width, height in SIZES:
        image = photo(width, height, copies=3 if width >= 1920 else 1)
        for name, det in (("", detector), (f"{baseline_name} ", baseline)):
            if det is None:
                continue
            faces = len(det.detect(image))
            times = time_runs(partial(det.detect, image), repeats)
            median = percentile(times, 50)
            rows.append(Row(f"{name}detect {width}×{height}", faces, 1, median * 1e3, percentile(times, 90) * 1e3,
                            1.0 / median))
    crop = photo(200, 200)
    # Slightly different crops so no layer can short-cut identical inputs.
    batch = [np.ascontiguousarray(np.roll(crop, k, axis=1)) for k in range(BATCH)]
    faces = sum(len(found) for found in detector.detect_batch(batch))
    times = [t / BATCH for t in time_runs(lambda: detector.detect_batch(batch), repeats)]
    median = percentile(times, 50)
    p90 = percentile(times, 90)
    rows.append(Row(f"detect_batch {BATCH} × 200×200", faces, BATCH, median * 1e3, p90 * 1e3, 1.0 / median))
    return rows


def render(rows: list[Row], env: dict[str, Any], repeats: int) -> Table:
    threads = env["threads"] or "all"
    table = Table(title=f"FaceDetector latency (RetinaFace-MobileNet0.25, ONNX Runtime {env['onnxruntime']}, "
                        f"{threads} intra-op threads, {repeats} runs after warm-up)")
    table.add_column("case", no_wrap=True)
    table.add_column("faces found", justify="right")
    table.add_column("median ms / image", justify="right")
    table.add_column("p90 ms / image", justify="right")
    table.add_column("images / s", justify="right")
    for row in rows:
        table.add_row(row.case, str(row.faces), f"{row.median_ms:.1f}", f"{row.p90_ms:.1f}",
                      f"{row.images_per_s:.1f}")
    table.caption = (f"{env['cpu_count']} CPUs, load average {env['load_average_1min']}; "
                     "the fine pass works on about 0.52 MP (DetectorConfig.pixel_budget), plus a coarse pass at 256 px "
                     "for large faces; 0.2.0 rows: one pass, photos downscaled to 960 px; before issue 32 rows: "
                     "the containment-only part test")
    return table


def add_common_args(parser: argparse.ArgumentParser, repeats: int) -> None:
    """--repeats, --threads and --json, shared with throughput.py."""
    parser.add_argument("--repeats", type=int, default=repeats,
                        help=f"timed runs per measurement (default {repeats})")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")


def check_common_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, repeats=30)
    parser.add_argument("--baseline", choices=("0.2.0", "issue-32"), default="0.2.0",
                        help="compare with the 0.2.0 detector, or with today's before issue 32's part test")
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    console, env = start(args.threads)
    if args.baseline == "issue-32":
        baseline: FaceDetector = ContainmentOnly(DetectorConfig(threads=args.threads))
        name = "before issue 32"
    else:
        baseline = FaceDetector(DetectorConfig.single_scale(score_threshold=0.8, threads=args.threads))
        name = "0.2.0"
    rows = measure(FaceDetector(DetectorConfig(threads=args.threads)), args.repeats, baseline, name)
    console.print(render(rows, env, args.repeats))
    write_json(console, args.json, {"benchmark": "detection", "repeats": args.repeats, "environment": env,
                                    "rows": [asdict(r) for r in rows]})


if __name__ == "__main__":
    main()
