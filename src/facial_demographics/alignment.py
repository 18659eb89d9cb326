"""Alignment: a similarity transform from the 5 landmarks onto a canonical template.

Training (the aligned-face cache) and inference call exactly these functions, so a model always
sees faces framed the way it was trained on; the bundle manifest records size and margin.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from .detection import FaceDetector
from .errors import InvalidValueError
from .types import AlignedFace, Detection

#: ArcFace's 5-point template for a 112x112 crop (eyes, nose, mouth corners), as fractions.
ARCFACE_TEMPLATE = (
    np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
        dtype=np.float64,
    )
    / 112.0
)
#: The framing of UTKFace's aligned crops: the Procrustes mean of RetinaFace landmarks over 300
#: random UTKFace images, made left-right symmetric. Aligning photos to it makes in-the-wild faces
#: look like the training crops (tighter than ArcFace, eyes higher), so margin 0 needs little padding.
UTKFACE_TEMPLATE = np.array(
    [[0.3163, 0.3099], [0.6837, 0.3099], [0.5000, 0.5221], [0.3427, 0.6719], [0.6573, 0.6719]],
    dtype=np.float64,
)
TEMPLATES = {"arcface5": ARCFACE_TEMPLATE, "utkface5": UTKFACE_TEMPLATE}


@dataclass(frozen=True)
class AlignmentConfig:
    """Output size in pixels and margin: extra context on each side, as a share of the template.

    The default template reproduces UTKFace's framing (our training data) at margin 0; a margin m
    shrinks the template to 1 / (1 + 2m) of the crop, adding context on every side.
    """

    size: int = 112
    margin: float = 0.0
    template: str = "utkface5"
    # Cropped-dataset mode (``--cropped`` and the training cache): padding added on every side before
    # detection, as a share of the side, and the longest side the padded canvas is detected at (shrunk when
    # larger). 0.2.0 used 0.25 and no limit (a 200 px crop: a 300 px canvas); 0.10 and 192 px take 45 % of
    # that detection time at the same validation MAE (README, "Speed and footprint").
    canvas_pad: float = 0.10
    canvas_side: int | None = 192
    single_score_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.size < 16:
            raise InvalidValueError(f"alignment size must be at least 16, got {self.size}")
        if not 0.0 <= self.margin <= 2.0:
            raise InvalidValueError(f"alignment margin must be in [0, 2], got {self.margin}")
        if self.canvas_side is not None and self.canvas_side < 32:
            raise InvalidValueError(f"canvas_side must be at least 32, got {self.canvas_side}")
        if self.template not in TEMPLATES:
            raise InvalidValueError(f"unknown alignment template {self.template!r} (known: {sorted(TEMPLATES)})")

    def destination(self) -> np.ndarray:
        """Template landmark positions in output pixels."""
        return ((TEMPLATES[self.template] - 0.5) / (1.0 + 2.0 * self.margin) + 0.5) * self.size


#: Landmark weights in the fit: the eyes are the most reliably located points and set the
#: in-plane rotation, so they count more than nose and mouth (which move with expression).
LANDMARK_WEIGHTS = np.array([3.0, 3.0, 1.0, 1.0, 1.0])


def similarity_transform(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares similarity (rotation, uniform scale, translation) mapping src onto dst
    (Umeyama's closed form)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    src_mean, dst_mean = w @ src, w @ dst
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = (dst_c * w[:, None]).T @ src_c
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rotation = u @ np.diag(d) @ vt
    var = w @ (src_c**2).sum(axis=1)
    scale = (s * d).sum() / var if var > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Apply a 2x3 affine; reflected borders avoid black wedges (and streaks) the model would learn."""
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )


def align(image: np.ndarray, detection: Detection, config: AlignmentConfig | None = None) -> AlignedFace:
    """Warp one detected face onto the template."""
    cfg = config or AlignmentConfig()
    matrix = similarity_transform(detection.landmarks, cfg.destination(), LANDMARK_WEIGHTS)
    return AlignedFace(image=warp(image, matrix, cfg.size), detection=detection, matrix=matrix)


def whole_image_fallback(image: np.ndarray, config: AlignmentConfig | None = None) -> AlignedFace:
    """Treat the image as an already-aligned crop: its central square resized to the output size.

    The detection reported is the whole image with the template landmarks mapped back into it,
    score 0, so downstream code needs no special case.
    """
    cfg = config or AlignmentConfig()
    h, w = image.shape[:2]
    side = min(h, w)
    x0, y0 = (w - side) / 2, (h - side) / 2
    scale = cfg.size / side
    matrix = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])
    landmarks = (cfg.destination() / scale + [x0, y0]).astype(np.float32)
    detection = Detection(box=(0.0, 0.0, float(w), float(h)), score=0.0, landmarks=landmarks)
    resized = cv2.resize(image[int(y0) : int(y0) + side, int(x0) : int(x0) + side], (cfg.size, cfg.size),
                         interpolation=cv2.INTER_AREA)
    return AlignedFace(image=resized, detection=detection, matrix=matrix, fallback=True)


def _pad_canvas(image: np.ndarray, pad_share: float) -> tuple[np.ndarray, int]:
    pad = int(round(max(image.shape[:2]) * pad_share))
    return cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0)), pad


def best_face(detections: list[Detection], width: int, height: int) -> Detection | None:
    """The face a cropped image is about: large, confident and near the centre."""
    if not detections:
        return None
    centre = np.array([width / 2, height / 2])

    def rank(d: Detection) -> float:
        box_centre = np.array([(d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2])
        offset = float(np.linalg.norm(box_centre - centre)) / max(width, height)
        return d.score * d.width * d.height * (1.0 - min(offset, 0.9))

    return max(detections, key=rank)


def padded_canvas_detections(
    image: np.ndarray, detector: FaceDetector, config: AlignmentConfig | None = None
) -> list[Detection]:
    """Detect on a padded canvas (faces filling a crop are too tight for the anchors otherwise), shrunk to
    ``config.canvas_side`` at most; boxes and landmarks come back in ``image`` pixels."""
    cfg = config or AlignmentConfig()
    canvas, pad = _pad_canvas(image, cfg.canvas_pad)
    scale = 1.0
    if cfg.canvas_side is not None and max(canvas.shape[:2]) > cfg.canvas_side:
        scale = cfg.canvas_side / max(canvas.shape[:2])
        size = (max(1, round(canvas.shape[1] * scale)), max(1, round(canvas.shape[0] * scale)))
        canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA)
    found = detector.detect(canvas)
    return [
        Detection(
            box=tuple(v / scale - pad for v in d.box),  # type: ignore[arg-type]
            score=d.score,
            landmarks=(d.landmarks / scale - pad).astype(np.float32),
        )
        for d in found
        if d.score >= cfg.single_score_threshold
    ]


def align_single(image: np.ndarray, detector: FaceDetector, config: AlignmentConfig | None = None) -> AlignedFace:
    """Single-face mode for cropped datasets (UTKFace): align the best face, else fall back."""
    cfg = config or AlignmentConfig()
    height, width = image.shape[:2]
    chosen = best_face(padded_canvas_detections(image, detector, cfg), width, height)
    if chosen is None:
        return whole_image_fallback(image, cfg)
    # The reported box stays inside the crop, as on the normal path (the detector clips there); the
    # landmarks stay as found, since alignment needs a cut face's eyes where they really are.
    box = tuple(float(v) for v in np.clip(chosen.box, 0.0, [width, height, width, height]))
    return align(image, replace(chosen, box=box), cfg)  # type: ignore[arg-type]
