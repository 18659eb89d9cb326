"""``evaluate-detection``: the face detector on generated scenes, or on photos with annotated faces
(``run_photo_benchmark``), with ``metrics.json`` and ``report.html``.

The scenes (see ``scenes``) are regenerated from the dataset and a seed each run; nothing but the
results is written. Timing runs each detector on two fixed scenes (640×480 and 1920×1080, a few faces
each) after a warm-up and reports the median, so it is comparable between detectors in one run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
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
from .annotations import AnnotatedImage, AnnotationError, Annotations, read_annotations
from .detection_metrics import BoxMatch, SceneOutcome, clip_box, match_boxes, match_scene, rate, summarize
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
    #: Poster scenes (a group in front of a big face) on top of ``scenes``; None: a tenth of ``scenes``.
    poster_scenes: int | None = None

    def __post_init__(self) -> None:
        for name in ("scenes", "pool_size", "timing_repeats"):
            if getattr(self, name) < 1:
                raise InvalidValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.poster_scenes is not None and self.poster_scenes < 0:
            raise InvalidValueError(f"poster_scenes must be at least 0, got {self.poster_scenes}")

    @property
    def posters(self) -> int:
        """How many poster scenes the run adds."""
        return self.scenes // 10 if self.poster_scenes is None else self.poster_scenes

    @property
    def total_scenes(self) -> int:
        return self.scenes + self.posters


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
    """Generate every scene (the drawn ones, then the posters), detect, and match; scenes are made one at a
    time (bounded memory)."""
    outcomes = []
    plan = [(i, None) for i in range(settings.scenes)] + [(i, "poster") for i in range(settings.posters)]
    for index, kind in plan:
        scene = make_scene(pool, settings.seed, index, kind)
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
    with progress("scenes", settings.total_scenes) as advance:
        metrics, outcomes = benchmark(detector.detect, pool, settings, advance)
    metrics["detector"] = {"name": "RetinaFace-MobileNet0.25", **detector.config.__dict__}
    metrics["settings"] = {**settings.__dict__, "dataset": str(dataset), "pool": len(pool)}
    write_outputs(out, metrics, outcomes)
    return metrics


# -- real photos with annotated faces ---------------------------------------------------------------
#: Face-size bands for annotated photos (pixels, the geometric mean of the box's sides).
PHOTO_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<24", 0.0, 24.0), ("24-48", 24.0, 48.0), ("48-96", 48.0, 96.0), ("96+", 96.0, math.inf))
#: Recall is reported at IoU 0.5 and 0.3: people draw face boxes tighter or looser than a detector does
#: (dlib's examples end at the brows), which IoU 0.3 forgives.
PHOTO_IOUS = (0.5, 0.3)


@dataclass(frozen=True)
class PhotoOutcome:
    """One annotated photo: the detector's boxes and their matches at each of ``PHOTO_IOUS``."""

    path: Path
    image: AnnotatedImage
    size: tuple[int, int]  # width, height
    detections: list[Detection]
    seconds: float
    matches: tuple[BoxMatch, ...]  # one per PHOTO_IOUS

    @property
    def misses(self) -> int:
        """Annotated faces (not ignored ones) no box found at IoU 0.5."""
        return sum(not f and not b.ignore for f, b in zip(self.matches[0].found, self.image.boxes, strict=True))

    @property
    def badness(self) -> int:
        """Misses, duplicates and false faces at IoU 0.5, for choosing the worst photos to show."""
        return self.misses + self.matches[0].duplicates + self.matches[0].false_positives


def photo_paths(annotations: Sequence[Annotations], images: Path | None) -> list[tuple[Path, AnnotatedImage]]:
    """Each annotated photo's file: under ``images``, else beside its annotation file (inside a VOC folder).

    Raises:
        AnnotationError: a photo is missing (the first one is named, with its annotation file).
    """
    out = []
    for ann in annotations:
        base = images if images is not None else (ann.source if ann.source.is_dir() else ann.source.parent)
        for image in ann.images:
            path = base / image.file
            if not path.is_file():
                raise AnnotationError(f"{ann.source}: photo {image.file!r} not found at {path} "
                                      "(point --images at the folder that holds the photos)")
            out.append((path, image))
    return out


def read_photo(path: Path) -> np.ndarray:
    """The photo's pixels as stored (no EXIF rotation: annotation tools draw on the stored pixels).

    Raises:
        AnnotationError: the file is not a readable image.
    """
    try:
        with Image.open(path) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise AnnotationError(f"{path}: not a readable image ({exc})") from None


def match_photo(path: Path, image: AnnotatedImage, size: tuple[int, int], detections: list[Detection],
                seconds: float) -> PhotoOutcome:
    """Match the detector's boxes to the annotated faces (clipped to the photo) at each IoU of ``PHOTO_IOUS``."""
    width, height = size
    truth = [clip_box(b.box, width, height) for b in image.boxes]
    ignored = [b.ignore for b in image.boxes]
    boxes = [clip_box(d.box, width, height) for d in detections]
    scores = [d.score for d in detections]
    matches = tuple(match_boxes(truth, ignored, boxes, scores, t) for t in PHOTO_IOUS)
    return PhotoOutcome(path, image, size, detections, seconds, matches)


def run_photos(detect: DetectFn, photos: Sequence[tuple[Path, AnnotatedImage]],
               progress: Callable[[int], None] | None = None) -> list[PhotoOutcome]:
    """Read, detect (timed: detection only) and match each photo in turn."""
    outcomes = []
    for path, image in photos:
        pixels = read_photo(path)
        start = time.perf_counter()
        found = detect(pixels)
        seconds = time.perf_counter() - start
        outcomes.append(match_photo(path, image, (pixels.shape[1], pixels.shape[0]), found, seconds))
        if progress:
            progress(1)
    return outcomes


def _photo_band(size: float) -> str:
    return next(name for name, lo, hi in PHOTO_BANDS if lo <= size < hi)


def summarize_photos(outcomes: Sequence[PhotoOutcome]) -> dict[str, Any]:
    """Recall overall and by face size at each IoU, precision, false faces per image, duplicates per face, time.

    Keys ``iou_0.5`` and ``iou_0.3`` hold the figures at each threshold; rates are fractions, null where
    nothing was counted.
    """
    faces = [(b.size, i, o) for o in outcomes for i, b in enumerate(o.image.boxes) if not b.ignore]
    out: dict[str, Any] = {"images": len(outcomes), "faces": len(faces),
                           "ignored_faces": sum(b.ignore for o in outcomes for b in o.image.boxes),
                           "face_free_images": sum(not o.image.boxes for o in outcomes)}
    by_size: dict[str, dict[str, Any]] = {name: {"faces": 0} for name, _, _ in PHOTO_BANDS}
    for size, _, _ in faces:
        by_size[_photo_band(size)]["faces"] += 1
    for t, threshold in enumerate(PHOTO_IOUS):
        key = f"iou_{threshold}"
        found = [o.matches[t].found[i] for _, i, o in faces]
        tps = sum(m >= 0 and not o.image.boxes[m].ignore for o in outcomes for m in o.matches[t].matched)
        dups = sum(o.matches[t].duplicates for o in outcomes)
        fps = sum(o.matches[t].false_positives for o in outcomes)
        out[key] = {"recall": rate(sum(found), len(found)), "found": sum(found),
                    "precision": rate(tps, tps + dups + fps), "duplicates": dups, "false_positives": fps,
                    "duplicates_per_face": rate(dups, len(faces)),
                    "false_positives_per_image": rate(fps, len(outcomes))}
        for name in by_size:
            hits = [f for (size, _, _), f in zip(faces, found, strict=True) if _photo_band(size) == name]
            by_size[name][key] = rate(sum(hits), len(hits))
    out["recall_by_size"] = by_size
    times = [1e3 * o.seconds for o in outcomes]
    out["ms_per_image"] = {"mean": float(np.mean(times)) if times else None,
                           "median": float(np.median(times)) if times else None}
    return out


def draw_photo(pixels: np.ndarray, outcome: PhotoOutcome) -> np.ndarray:
    """Annotated faces in green (ignored ones grey), boxes that found a face blue, other boxes red (IoU 0.5)."""
    out = pixels.copy()
    thick = max(1, round(max(out.shape[:2]) / 400))
    for b in outcome.image.boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in b.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (150, 150, 150) if b.ignore else (0, 200, 0), thick)
    for k, det in enumerate(outcome.detections):
        x1, y1, x2, y2 = (int(round(v)) for v in det.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (40, 90, 255) if outcome.matches[0].matched[k] >= 0 else (255, 0, 0),
                      thick)
    return out


def _worst_photos(outcomes: Sequence[PhotoOutcome], n: int) -> str:
    worst = sorted((o for o in outcomes if o.badness), key=lambda o: -o.badness)[:n]
    cells = []
    for o in worst:
        m = o.matches[0]
        caption = (f"{o.image.file}: {o.size[0]}×{o.size[1]}, {sum(not b.ignore for b in o.image.boxes)} faces — "
                   f"{o.misses} missed, {m.duplicates} duplicate, {m.false_positives} false (IoU 0.5)")
        image = draw_photo(read_photo(o.path), o)
        cells.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/jpeg;base64,'
                     f'{_thumbnail(image)}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    return "".join(cells) or "<p>No photo had a miss, a duplicate or a false face.</p>"


def render_photo_report(metrics: dict[str, Any], outcomes: Sequence[PhotoOutcome], gallery: int = 12) -> str:
    """A self-contained HTML page for annotated photos: the figures at both IoUs and the worst photos drawn."""
    m = metrics
    keys = [f"iou_{t}" for t in PHOTO_IOUS]
    head = "".join(f"<th>IoU ≥ {t}</th>" for t in PHOTO_IOUS)
    lines = [("recall", [_pct(m[k]["recall"]) for k in keys]), ("precision", [_pct(m[k]["precision"]) for k in keys]),
             ("false faces per image", [f"{m[k]['false_positives_per_image'] or 0:.3f}" for k in keys]),
             ("duplicate boxes per face", [_pct(m[k]["duplicates_per_face"]) for k in keys])]
    rows = "".join(f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{v}</td>" for v in values) + "</tr>"
                   for name, values in lines)
    sizes = "".join(f"<tr><td>{html.escape(name)}</td><td>{row['faces']}</td>"
                    + "".join(f"<td>{_pct(row[k])}</td>" for k in keys) + "</tr>"
                    for name, row in m["recall_by_size"].items())
    sources = ", ".join(f"{html.escape(a['path'])} ({a['format']})" for a in m["annotations"])
    ms = m["ms_per_image"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Detection on annotated photos</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}figure{{display:inline-block;margin:6px;
max-width:430px;vertical-align:top}}figcaption{{font-size:13px}}</style></head><body>
<h1>Face detection on annotated photos</h1>
<p>{m['images']} photos from {sources}: {m['faces']} faces counted, {m['ignored_faces']} ignored (marked difficult,
crowd, invalid or ignore), {m['face_free_images']} photos without a face. Detector:
{html.escape(str(m.get('detector')))}. A face is found when a box overlaps it with the IoU of the column; a duplicate
is a further box lying mostly on a face. Detection time: {ms['mean'] or 0:.1f} ms per photo on average
(median {ms['median'] or 0:.1f} ms).</p>
<table><tr><th></th>{head}</tr>{rows}</table>
<h2>Recall by face size</h2><table><tr><th>size (px)</th><th>faces</th>{head}</tr>{sizes}</table>
<h2>Worst photos</h2><p>Green: an annotated face (grey: ignored); blue: a box that found a face; red: a duplicate or
false box (at IoU 0.5).</p>
{_worst_photos(outcomes, gallery)}</body></html>"""


def photo_summary_line(metrics: dict[str, Any]) -> str:
    """The headline figures for annotated photos in one sentence, for the terminal."""
    m, a, b = metrics, metrics["iou_0.5"], metrics["iou_0.3"]
    return (f"{m['images']} photos, {m['faces']} faces: recall {_pct(a['recall'])} at IoU 0.5, "
            f"{_pct(b['recall'])} at IoU 0.3; precision {_pct(a['precision'])} (IoU 0.3: {_pct(b['precision'])}), "
            f"{a['false_positives_per_image'] or 0:.3f} false faces per image, duplicates "
            f"{_pct(a['duplicates_per_face'])} of faces; {m['ms_per_image']['mean'] or 0:.1f} ms per image")


def run_photo_benchmark(annotation_paths: Sequence[Path], images: Path | None, out: Path,
                        config: DetectorConfig | None = None,
                        progress: ProgressFactory = no_progress) -> dict[str, Any]:
    """Our detector on annotated photos: write ``metrics.json`` and ``report.html`` to ``out``.

    Args:
        annotation_paths: annotation files or VOC folders (see ``annotations.read_annotations``).
        images: the folder the annotations' file names are relative to; None: beside each annotation file.
        out: the output folder.
        config: the detector's settings (default: the default detector).
        progress: a progress-bar factory.

    Returns:
        The metrics as written.

    Raises:
        AnnotationError: an annotation file cannot be read, or a photo is missing or unreadable.
    """
    if not annotation_paths:
        raise InvalidValueError("no annotation file given")
    annotations = [read_annotations(p) for p in annotation_paths]
    photos = photo_paths(annotations, images)
    detector = FaceDetector(config or DetectorConfig())
    with progress("photos", len(photos)) as advance:
        outcomes = run_photos(detector.detect, photos, advance)
    metrics = summarize_photos(outcomes)
    metrics["annotations"] = [{"path": str(a.source), "format": a.format, "images": len(a.images),
                               "faces": a.faces} for a in annotations]
    metrics["images_dir"] = None if images is None else str(images)
    metrics["detector"] = {"name": "RetinaFace-MobileNet0.25", **detector.config.__dict__}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (out / "report.html").write_text(render_photo_report(metrics, outcomes), encoding="utf-8")
    return metrics
