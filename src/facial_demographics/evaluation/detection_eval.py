"""``evaluate-detection``: the face detector on generated scenes, with ``metrics.json`` and ``report.html``.

The scenes (see ``scenes``) are regenerated from the dataset and a seed each run; nothing but the
results is written. Timing runs each detector on two fixed scenes (640×480 and 1920×1080, a few faces
each) after a warm-up and reports the median, so it is comparable between detectors in one run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..detection import DetectorConfig, FaceDetector
from ..errors import InvalidValueError
from ..progress import ProgressFactory, no_progress
from ..types import Detection
from .detection_metrics import SceneOutcome, match_scene, summarize
from .scenes import PoolFace, draw_scene, make_scene, paste, pool_from_crops

DetectFn = Callable[[np.ndarray], list[Detection]]
TIMING_SIZES = ((640, 480), (1920, 1080))


@dataclass(frozen=True)
class BenchmarkSettings:
    """What defines a benchmark run: the same settings regenerate the same scenes."""

    scenes: int = 400
    seed: int = 0
    pool_size: int = 300
    split: str = "train"  # development faces only: the test split stays unseen
    timing_repeats: int = 10

    def __post_init__(self) -> None:
        for name in ("scenes", "pool_size", "timing_repeats"):
            if getattr(self, name) < 1:
                raise InvalidValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def load_pool(dataset: Path, settings: BenchmarkSettings, split_file: Path | None = None) -> list[PoolFace]:
    """A seeded sample of the split's crops that the detector finds confidently on their own.

    Raises:
        ValueError: the dataset has no usable crops in that split.
    """
    from ..imaging import ImageError
    from .evaluate import _load_image, select_records

    chosen = select_records(dataset, split=settings.split, split_file=split_file, limit=settings.pool_size,
                            seed=settings.seed)
    keys, crops = [], []
    for record in chosen.records:
        try:
            crops.append(_load_image(record.path))
        except ImageError:
            continue
        keys.append(record.key)
    pool = pool_from_crops(keys, crops, FaceDetector(DetectorConfig.single_scale()))
    if not pool:
        raise InvalidValueError(
            f"{dataset}: none of the {len(chosen.records)} {settings.split} images has a confident face")
    return pool


def run_scenes(detect: DetectFn, pool: Sequence[PoolFace], settings: BenchmarkSettings,
               progress: Callable[[int], None] | None = None) -> list[SceneOutcome]:
    """Generate every scene, detect, and match; scenes are made one at a time (bounded memory)."""
    outcomes = []
    for index in range(settings.scenes):
        scene = make_scene(pool, settings.seed, index)
        start = time.perf_counter()
        found = detect(scene.image)
        outcomes.append(match_scene(scene, found, time.perf_counter() - start))
        if progress:
            progress(1)
    return outcomes


def timing_scene(pool: Sequence[PoolFace], width: int, height: int) -> np.ndarray:
    """A fixed photo of ``width``×``height`` with three faces (large, medium, small) on a plain wall."""
    canvas = np.full((height, width, 3), 150, np.uint8)
    for k, (share, x) in enumerate(((0.45, 0.25), (0.2, 0.6), (0.08, 0.85))):
        size = share * height
        paste(canvas, pool[k % len(pool)], size, 0.0, (x * width, 0.5 * height))
    return canvas


def time_detector(detect: DetectFn, pool: Sequence[PoolFace], repeats: int) -> dict[str, float]:
    """Median milliseconds per image at each of ``TIMING_SIZES``, after two warm-up runs."""
    out = {}
    for width, height in TIMING_SIZES:
        image = timing_scene(pool, width, height)
        for _ in range(2):
            detect(image)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            detect(image)
            times.append(time.perf_counter() - start)
        out[f"{width}x{height}"] = 1e3 * float(np.median(times))
    return out


def benchmark(detect: DetectFn, pool: Sequence[PoolFace], settings: BenchmarkSettings,
              progress: Callable[[int], None] | None = None) -> tuple[dict[str, Any], list[SceneOutcome]]:
    """Quality over the scenes plus timing: the metrics dict and each scene's outcome."""
    outcomes = run_scenes(detect, pool, settings, progress)
    metrics = summarize(outcomes)
    metrics["ms_per_image"] = time_detector(detect, pool, settings.timing_repeats)
    return metrics, outcomes


# -- report ---------------------------------------------------------------------------------------
def _thumbnail(image: np.ndarray, max_side: int = 420) -> str:
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale < 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _rows(table: dict[str, dict[str, Any]]) -> str:
    return "".join(f"<tr><td>{html.escape(k)}</td><td>{v['faces']}</td><td>{_pct(v['recall'])}</td></tr>"
                   for k, v in table.items())


def _worst(outcomes: Sequence[SceneOutcome], n: int) -> str:
    worst = sorted((o for o in outcomes if o.badness), key=lambda o: (-o.badness, o.scene.index))[:n]
    cells = []
    for o in worst:
        s = o.scene
        caption = (f"scene {s.index}: {s.kind}, {s.condition}, {s.image.shape[1]}×{s.image.shape[0]}, "
                   f"{len(s.faces)} faces — {o.misses} missed, {o.duplicates} duplicate, "
                   f"{o.false_positives} false")
        image = draw_scene(s, o.detections, [k for k, m in enumerate(o.matched) if m >= 0])
        cells.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/jpeg;base64,'
                     f'{_thumbnail(image)}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    return "".join(cells) or "<p>No scene had a miss, a duplicate or a false face.</p>"


def render_report(metrics: dict[str, Any], outcomes: Sequence[SceneOutcome], gallery: int = 12) -> str:
    """A self-contained HTML page: headline figures, recall tables and the worst scenes drawn."""
    m = metrics
    ms = ", ".join(f"{k}: {v:.1f} ms" for k, v in m["ms_per_image"].items())
    close = m["closeups"]
    headline = [
        ("recall (faces ≥ 16 px)", _pct(m["recall"])), ("recall (faces ≥ 32 px)", _pct(m["recall_32_plus"])),
        ("precision", _pct(m["precision"])), ("duplicate boxes per face", _pct(m["duplicates_per_face"])),
        ("false faces per face-free image", f"{m['false_positives_per_face_free_image'] or 0:.3f}"),
        ("close-ups with exactly one box", _pct(close["exactly_one_box"])),
        ("landmark error (mean, / inter-ocular)", f"{m['landmark_nme_mean'] or 0:.3f}"), ("time per image", ms),
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in headline)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Detection benchmark</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}figure{{display:inline-block;margin:6px;
max-width:430px;vertical-align:top}}figcaption{{font-size:13px}}</style></head><body>
<h1>Face detection benchmark</h1>
<p>{m['scenes']} generated scenes ({m['faces']} faces counted, {m['ignored_faces']} ignored: under 16 px or less
than half inside the image; {m['face_free_images']} face-free scenes). Detector: {html.escape(str(m.get('detector')))}.
A face is found when a box overlaps it with IoU ≥ 0.5; a duplicate is a further box lying mostly on a face.</p>
<table>{rows}</table>
<h2>Recall by face size</h2><table><tr><th>size (px)</th><th>faces</th><th>recall</th></tr>
{_rows(m['recall_by_size'])}</table>
<h2>Recall by image condition</h2><table><tr><th>condition</th><th>faces</th><th>recall</th></tr>
{_rows(m['recall_by_condition'])}</table>
<h2>Worst scenes</h2><p>Green: ground truth; blue: a box that found a face; red: a duplicate or false box.</p>
{_worst(outcomes, gallery)}</body></html>"""


def summary_line(metrics: dict[str, Any]) -> str:
    """The headline figures in one sentence, for the terminal."""
    m = metrics
    return (f"recall {_pct(m['recall'])} (≥ 32 px: {_pct(m['recall_32_plus'])}), precision {_pct(m['precision'])}, "
            f"duplicates {_pct(m['duplicates_per_face'])} of faces, "
            f"{m['false_positives_per_face_free_image'] or 0:.3f} false faces per face-free image, "
            f"close-ups with one box {_pct(m['closeups']['exactly_one_box'])}; "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in m["ms_per_image"].items()))


def write_outputs(out: Path, metrics: dict[str, Any], outcomes: Sequence[SceneOutcome]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (out / "report.html").write_text(render_report(metrics, outcomes), encoding="utf-8")


def run_detection_benchmark(dataset: Path, out: Path, settings: BenchmarkSettings,
                            config: DetectorConfig | None = None, split_file: Path | None = None,
                            progress: ProgressFactory = no_progress) -> dict[str, Any]:
    """Run the benchmark for our detector with ``config`` and write ``metrics.json`` and ``report.html``.

    Returns:
        The metrics (as written); ``metrics["settings"]["pool"]`` is the number of development faces used.
    """
    detector = FaceDetector(config or DetectorConfig())
    pool = load_pool(dataset, settings, split_file)
    with progress("scenes", settings.scenes) as advance:
        metrics, outcomes = benchmark(detector.detect, pool, settings, advance)
    metrics["detector"] = {"name": "RetinaFace-MobileNet0.25", **detector.config.__dict__}
    metrics["settings"] = {**settings.__dict__, "dataset": str(dataset), "pool": len(pool)}
    write_outputs(out, metrics, outcomes)
    return metrics
