"""Detection quality: match boxes to ground truth per scene, then sum up by face size and condition.

Matching is greedy by score at IoU ≥ 0.5 against the ground-truth box clipped to the image (a
reported box is inside the image). An unmatched box is a **duplicate** when at least half of it lies
on a face (a second box on the same face, or a part of a large face), and a **false positive**
otherwise. Faces less than half inside the image, or under 16 px, are *ignored*: finding them is not
required, and a box on them is neither a hit nor an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..types import Detection
from .scenes import Scene

IOU_MATCH = 0.5
#: Face-size bands in pixels (the geometric mean of box width and height); the last is open-ended.
SIZE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("16-32", 16, 32), ("32-64", 32, 64), ("64-128", 64, 128), ("128-256", 128, 256), ("256-400", 256, 400),
    ("400+", 400, math.inf),
)
MIN_VISIBLE = 0.5
MIN_SIZE = 16.0

Box = tuple[float, float, float, float]


def clip_box(box: Sequence[float], width: int, height: int) -> Box:
    return (min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
            min(max(box[2], 0.0), width), min(max(box[3], 0.0), height))


def _area(box: Sequence[float]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _intersection(a: Sequence[float], b: Sequence[float]) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def size_band(size: float) -> str | None:
    for name, lo, hi in SIZE_BANDS:
        if lo <= size < hi:
            return name
    return None


@dataclass
class SceneOutcome:
    """What happened in one scene; ``matched[k]`` is the face index box k found, or -1."""

    scene: Scene
    detections: list[Detection]
    seconds: float
    matched: list[int] = field(default_factory=list)
    duplicates: int = 0
    false_positives: int = 0
    found: list[bool] = field(default_factory=list)  # per face
    ignored: list[bool] = field(default_factory=list)  # per face
    landmark_errors: list[float] = field(default_factory=list)  # per matched face, / inter-ocular distance

    @property
    def misses(self) -> int:
        return sum(1 for f, ign in zip(self.found, self.ignored, strict=True) if not f and not ign)

    @property
    def badness(self) -> int:
        """How wrong the scene went, for choosing the worst cases to show."""
        return self.misses + self.duplicates + self.false_positives


def _landmark_error(truth: np.ndarray, found: np.ndarray) -> float:
    interocular = float(np.linalg.norm(truth[1] - truth[0]))
    return float(np.linalg.norm(found - truth, axis=1).mean()) / max(interocular, 1e-6)


@dataclass(frozen=True)
class BoxMatch:
    """Boxes matched to faces: ``matched[k]`` is the face box k found (or -1), ``found`` is per face."""

    matched: list[int]
    found: list[bool]
    duplicates: int
    false_positives: int


def match_boxes(truth: Sequence[Box], ignored: Sequence[bool], boxes: Sequence[Box], scores: Sequence[float],
                iou_match: float = IOU_MATCH) -> BoxMatch:
    """Greedy matching by score (see the module docstring); every box is already inside the image.

    A box on an ignored face is neither a hit nor an error; a box matching an ignored face marks it found.
    """
    matched, found = [-1] * len(boxes), [False] * len(truth)
    duplicates = false_positives = 0
    for k in sorted(range(len(boxes)), key=lambda k: -scores[k]):
        box = boxes[k]
        overlaps = [iou(box, t) if not found[i] else 0.0 for i, t in enumerate(truth)]
        best = int(np.argmax(overlaps)) if overlaps else -1
        if best >= 0 and overlaps[best] >= iou_match:
            found[best] = True
            matched[k] = best
            continue
        if any(ign and _intersection(box, t) > 0.5 * _area(box) for t, ign in zip(truth, ignored, strict=True)):
            continue
        on_face = max((_intersection(box, t) / max(_area(box), 1e-9) for t in truth), default=0.0)
        if on_face >= 0.5:
            duplicates += 1
        else:
            false_positives += 1
    return BoxMatch(matched, found, duplicates, false_positives)


def match_scene(scene: Scene, detections: Sequence[Detection], seconds: float = 0.0,
                iou_match: float = IOU_MATCH) -> SceneOutcome:
    """Match one scene's boxes to its faces (see the module docstring for the rules)."""
    height, width = scene.image.shape[:2]
    truth = [clip_box(f.box, width, height) for f in scene.faces]
    ignored = [_area(t) < MIN_VISIBLE * _area(f.box) or f.size < MIN_SIZE for t, f in zip(truth, scene.faces,
                                                                                             strict=True)]
    boxes = [clip_box(d.box, width, height) for d in detections]
    m = match_boxes(truth, ignored, boxes, [d.score for d in detections], iou_match)
    out = SceneOutcome(scene, list(detections), seconds, matched=m.matched, duplicates=m.duplicates,
                       false_positives=m.false_positives, found=m.found, ignored=ignored)
    for k in sorted(range(len(detections)), key=lambda k: -detections[k].score):  # the order of matching
        det, face = detections[k], m.matched[k]
        if face >= 0 and not ignored[face] and np.isfinite(det.landmarks).all():  # a detector may give none
            out.landmark_errors.append(_landmark_error(scene.faces[face].landmarks, det.landmarks))
    return out


def rate(num: float, den: float) -> float | None:
    return num / den if den else None


def _recall_table(outcomes: Sequence[SceneOutcome], key: str) -> dict[str, dict[str, Any]]:
    counts: dict[str, list[int]] = {}
    for o in outcomes:
        for face, found, ign in zip(o.scene.faces, o.found, o.ignored, strict=True):
            if ign:
                continue
            name = size_band(face.size) if key == "size" else o.scene.condition
            if name is None:
                continue
            c = counts.setdefault(name, [0, 0])
            c[0] += found
            c[1] += 1
    order = [b[0] for b in SIZE_BANDS] if key == "size" else sorted(counts)
    return {n: {"faces": counts[n][1], "recall": rate(counts[n][0], counts[n][1])} for n in order if n in counts}


def _closeups(outcomes: Sequence[SceneOutcome]) -> dict[str, Any]:
    scenes = [o for o in outcomes if o.scene.kind == "closeup"]
    one = sum(len(o.detections) == 1 for o in scenes)
    one_right = sum(len(o.detections) == 1 and o.found[0] for o in scenes)
    return {"images": len(scenes), "exactly_one_box": rate(one, len(scenes)),
            "exactly_one_box_matching": rate(one_right, len(scenes)),
            "boxes_histogram": {str(n): sum(len(o.detections) == n for o in scenes)
                                for n in sorted({len(o.detections) for o in scenes})}}


def _posters(outcomes: Sequence[SceneOutcome]) -> dict[str, Any]:
    """Poster scenes: recall of the faces in front of the big face, and of the big face itself."""
    counted = [(face.backdrop, fd) for o in outcomes if o.scene.kind == "poster"
               for face, fd, ign in zip(o.scene.faces, o.found, o.ignored, strict=True) if not ign]
    front = [fd for back, fd in counted if not back]
    backdrop = [fd for back, fd in counted if back]
    return {"images": sum(o.scene.kind == "poster" for o in outcomes),
            "front_faces": len(front), "front_recall": rate(sum(front), len(front)),
            "backdrop_faces": len(backdrop), "backdrop_recall": rate(sum(backdrop), len(backdrop))}


def summarize(outcomes: Sequence[SceneOutcome]) -> dict[str, Any]:
    """All the benchmark's figures (rates are fractions; null where nothing was counted)."""
    faces = sum(len(o.found) - sum(o.ignored) for o in outcomes)
    found = sum(sum(f and not i for f, i in zip(o.found, o.ignored, strict=True)) for o in outcomes)
    counted_faces = [(f, fd) for o in outcomes for f, fd, ign in zip(o.scene.faces, o.found, o.ignored, strict=True)
                     if not ign]
    big = [fd for f, fd in counted_faces if f.size >= 32]
    tps = sum(sum(m >= 0 and not o.ignored[m] for m in o.matched) for o in outcomes)
    dups = sum(o.duplicates for o in outcomes)
    fps = sum(o.false_positives for o in outcomes)
    empty = [o for o in outcomes if o.scene.kind == "empty"]
    errors = [e for o in outcomes for e in o.landmark_errors]
    return {
        "scenes": len(outcomes),
        "faces": faces,
        "ignored_faces": sum(sum(o.ignored) for o in outcomes),
        "recall": rate(found, faces),
        "recall_32_plus": rate(sum(big), len(big)),
        "precision": rate(tps, tps + dups + fps),
        "duplicates_per_face": rate(dups, faces),
        "duplicates": dups,
        "false_positives": fps,
        "false_positives_per_image": rate(fps, len(outcomes)),
        "false_positives_per_face_free_image": rate(sum(o.false_positives for o in empty), len(empty)),
        "face_free_images": len(empty),
        "landmark_nme_mean": float(np.mean(errors)) if errors else None,
        "landmark_nme_median": float(np.median(errors)) if errors else None,
        "recall_by_size": _recall_table(outcomes, "size"),
        "recall_by_condition": _recall_table(outcomes, "condition"),
        "closeups": _closeups(outcomes),
        "posters": _posters(outcomes),
        "ms_per_image_mean": 1e3 * float(np.mean([o.seconds for o in outcomes])) if outcomes else None,
    }
