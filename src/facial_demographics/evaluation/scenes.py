"""Deterministic test scenes for the detection benchmark: real faces pasted into face-free photos.

Nothing here is stored: a scene is a pure function of ``(seed, index)`` and the face pool, so anyone
with the same UTKFace copy regenerates exactly the same images and ground truth.

Ground truth comes from each UTKFace crop detected once, alone, on a padded canvas at its native
200 px (the easy case: the same procedure that builds the training cache), kept only when that
detection is confident. Pasting moves, scales and rotates the crop with a known affine transform, so
the box and the 5 landmarks follow exactly. A rotated face's box is the bounding box of the rotated
ellipse inscribed in its upright box, which is how face boxes are drawn for tilted heads (the
rotated rectangle's corners are hair and background).

Scene kinds (shares of the scenes):
- ``group``: 1–20 faces of 24–400 px, rotated up to ±30°, in photos of 640×480 to 1920×1080;
- ``small``: 4–20 faces of 16–32 px in 640×480 or 960×720 photos (below that size nothing is a face);
- ``closeup``: one face from 400 px to larger than the frame, often cut by the border;
- ``empty``: no face, for false positives (a cat, coffee, a rocket, textures, text).
Each scene then gets one image condition: none, blur, JPEG quality 20, dark or over-exposed.

``poster`` scenes are made only on request (``make_scene(..., kind="poster")``, their own random stream,
so the mix above and its published figures stay as they were): 2–10 faces of 24–200 px (at most 0.4 of
the big face's size) in front of one big, blurred face (a poster, a billboard, a screen) of 0.6–1.4× the
frame's short side, which is part of the ground truth too (``SceneFace.backdrop``). They test that the
big face's box does not swallow the faces in front of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache

import cv2
import numpy as np

from ..errors import InvalidValueError
from ..types import Detection

KINDS: tuple[tuple[str, float], ...] = (("group", 0.45), ("small", 0.15), ("closeup", 0.25), ("empty", 0.15))
CONDITIONS: tuple[tuple[str, float], ...] = (
    ("none", 0.4), ("blur", 0.15), ("jpeg20", 0.15), ("dark", 0.15), ("overexposed", 0.15),
)
GROUP_SIZES = ((640, 480), (1024, 768), (1280, 720), (1920, 1080), (768, 1024))
SMALL_SIZES = ((640, 480), (960, 720))
CLOSEUP_SIZES = ((640, 480), (1080, 1350), (1200, 1200), (1920, 1080), (1280, 960))
#: scikit-image's bundled photos without a human face (``astronaut`` and ``camera`` have one).
BACKGROUNDS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "grass", "gravel",
               "brick", "moon", "coins", "page", "text", "clock", "colorwheel", "horse", "retina", "cell")
MAX_ROTATION = 30.0
#: A third seed word for poster scenes, so poster scene i and drawn scene i are unrelated.
POSTER_STREAM = 7
#: UTKFace crops are the face box itself (no hair or shoulders), so each is extended by this share of
#: its side with its own edge colours and faded into the background across that margin: the face stays
#: intact and there is no hard seam for a detector to key on.
CONTEXT = 0.25


@dataclass(frozen=True)
class PoolFace:
    """One development crop with the face the detector finds on it alone (the ground truth source)."""

    key: str
    image: np.ndarray  # (200, 200, 3) RGB
    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # (5, 2)

    @cached_property
    def with_context(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The crop extended for pasting, its blending mask and the pad (made once, pasted many times)."""
        return _with_context(self.image)


@dataclass(frozen=True)
class SceneFace:
    """A pasted face: its full box (may reach outside the image) and landmarks, in scene pixels."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    key: str
    backdrop: bool = False  # the big face behind a poster scene's group

    @property
    def size(self) -> float:
        """Face size in pixels: the geometric mean of the full box's width and height."""
        return math.sqrt(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


@dataclass(frozen=True)
class Scene:
    index: int
    kind: str
    condition: str
    image: np.ndarray  # RGB uint8
    faces: tuple[SceneFace, ...]


def pool_from_crops(keys: Sequence[str], crops: Sequence[np.ndarray], detector: object,
                    min_score: float = 0.95) -> list[PoolFace]:
    """Keep the crops whose face is found confidently on its own; that detection is the ground truth.

    Args:
        keys: a name for each crop (reported in the worst cases).
        crops: RGB uint8 face crops (UTKFace's 200×200).
        detector: a ``FaceDetector`` (single-scale detection on the padded canvas, as the cache does).
        min_score: crops whose best face scores lower are left out (blurred or cut faces).

    Returns:
        The usable crops with their box and landmarks in crop pixels.
    """
    from ..alignment import AlignmentConfig, best_face, padded_canvas_detections

    pool = []
    for key, crop in zip(keys, crops, strict=True):
        found = padded_canvas_detections(crop, detector, AlignmentConfig())  # type: ignore[arg-type]
        face = best_face(found, crop.shape[1], crop.shape[0])
        if face is not None and face.score >= min_score:
            pool.append(PoolFace(key, crop, face.box, face.landmarks.astype(np.float64)))
    return pool


@lru_cache(maxsize=len(BACKGROUNDS))
def _background_photo(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the detection benchmark's backgrounds are scikit-image's bundled photos: "
                          "pip install scikit-image") from exc
    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A face-free photo: a random crop of a bundled photo, flipped and tinted, resized to the scene."""
    photo = _background_photo(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])
    ph, pw = photo.shape[:2]
    share = rng.uniform(0.5, 1.0)
    cw, ch = max(16, int(pw * share)), max(16, int(ph * share))
    x, y = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = photo[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_LINEAR)
    tinted = out.astype(np.float64) * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-20, 20)
    return np.clip(tinted, 0, 255).astype(np.uint8)


def _ellipse_box(box: Sequence[float], matrix: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box of the ellipse inscribed in ``box`` after a similarity transform."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    a, b = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    theta = math.atan2(matrix[1, 0], matrix[0, 0])
    nx, ny = matrix[:, :2] @ [cx, cy] + matrix[:, 2]
    hw = scale * math.sqrt((a * math.cos(theta)) ** 2 + (b * math.sin(theta)) ** 2)
    hh = scale * math.sqrt((a * math.sin(theta)) ** 2 + (b * math.cos(theta)) ** 2)
    return (float(nx - hw), float(ny - hh), float(nx + hw), float(ny + hh))


def _with_context(crop: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The crop extended by ``CONTEXT`` on every side, its blending mask, and the pad in pixels."""
    pad = max(1, int(round(CONTEXT * max(crop.shape[:2]))))
    extended = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    soft = cv2.GaussianBlur(extended, (0, 0), pad / 4)
    inner = np.zeros(extended.shape[:2], np.float32)
    inner[pad:-pad, pad:-pad] = 1.0
    extended = np.where(inner[..., None] > 0, extended, soft)
    h, w = extended.shape[:2]
    ys = np.minimum(np.arange(h), np.arange(h)[::-1]) / pad
    xs = np.minimum(np.arange(w), np.arange(w)[::-1]) / pad
    mask = np.minimum(np.minimum(ys[:, None], xs[None, :]), 1.0).astype(np.float32)
    return np.ascontiguousarray(extended), mask, pad


def paste(canvas: np.ndarray, face: PoolFace, size: float, angle: float, centre: tuple[float, float]) -> SceneFace:
    """Paste ``face`` so its face box is ``size`` px, rotated ``angle`` degrees, centred at ``centre``.

    Only the region the crop covers is warped, so big scenes with many faces stay cheap.
    """
    bx = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    scale = size / math.sqrt((face.box[2] - face.box[0]) * (face.box[3] - face.box[1]))
    matrix = np.asarray(cv2.getRotationMatrix2D(bx, angle, scale), dtype=np.float64)
    matrix[:, 2] += np.array(centre) - bx
    image, mask, pad = face.with_context
    source = matrix.copy()  # from the extended crop's pixels
    source[:, 2] -= source[:, :2] @ np.array([pad, pad], dtype=np.float64)
    h, w = image.shape[:2]
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64) @ source.T
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, canvas.shape[1]), min(y1, canvas.shape[0])
    if x1 > x0 and y1 > y0:
        local = source.copy()
        local[:, 2] -= [x0, y0]
        size_wh = (int(x1 - x0), int(y1 - y0))
        patch = cv2.warpAffine(image, local, size_wh, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(mask, local, size_wh, flags=cv2.INTER_LINEAR)[..., None]
        region = canvas[y0:y1, x0:x1].astype(np.float32)
        canvas[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + patch * alpha + 0.5, 0, 255).astype(np.uint8)
    landmarks = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    return SceneFace(_ellipse_box(face.box, matrix), landmarks, face.key)


def _crop_extent(face: PoolFace, size: float) -> float:
    """Half the diagonal of the pasted crop: the radius it may cover around its centre."""
    box_side = math.sqrt((face.box[2] - face.box[0]) * (face.box[3] - face.box[1]))
    return size / box_side * face.image.shape[0] * (1 + 2 * CONTEXT) / math.sqrt(2)


def _place_group(rng: np.random.Generator, canvas: np.ndarray, pool: Sequence[PoolFace], count: int,
                 sizes: tuple[float, float]) -> list[SceneFace]:
    """Paste up to ``count`` faces whose crops do not cover each other (rejection sampling)."""
    height, width = canvas.shape[:2]
    placed: list[tuple[float, float, float]] = []
    faces = []
    for _ in range(count):
        face = pool[int(rng.integers(len(pool)))]
        for _attempt in range(40):
            size = float(math.exp(rng.uniform(math.log(sizes[0]), math.log(sizes[1]))))
            radius = _crop_extent(face, size) * 0.75  # corners may overlap: they are feathered background
            if 2 * radius >= min(width, height):
                continue
            cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
            if all(math.hypot(cx - x, cy - y) > radius + r for x, y, r in placed):
                placed.append((cx, cy, radius))
                faces.append(paste(canvas, face, size, rng.uniform(-MAX_ROTATION, MAX_ROTATION), (cx, cy)))
                break
    return faces


def _closeup(rng: np.random.Generator, canvas: np.ndarray, pool: Sequence[PoolFace]) -> list[SceneFace]:
    """One face from 400 px up to 1.6× the frame's short side, its centre anywhere near the middle, so
    a large face is often cut by the border."""
    height, width = canvas.shape[:2]
    face = pool[int(rng.integers(len(pool)))]
    size = float(rng.uniform(400, max(401.0, 1.6 * min(width, height))))
    cx = width / 2 + rng.uniform(-0.3, 0.3) * width
    cy = height / 2 + rng.uniform(-0.3, 0.3) * height
    return [paste(canvas, face, size, rng.uniform(-15, 15), (cx, cy))]


def _poster(rng: np.random.Generator, canvas: np.ndarray, pool: Sequence[PoolFace]) -> list[SceneFace]:
    """A big, defocused face behind the frame, then a group in front of it, mostly over its box."""
    height, width = canvas.shape[:2]
    short = min(width, height)
    big = paste(canvas, pool[int(rng.integers(len(pool)))], float(rng.uniform(0.6, 1.4) * short),
                float(rng.uniform(-10, 10)), (width / 2 + rng.uniform(-0.2, 0.2) * width,
                                              height / 2 + rng.uniform(-0.2, 0.2) * height))
    # Defocus the backdrop (the group in front is sharp), as a photo focused on the people would.
    canvas[:] = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(1.0, 4.0) * short / 480)
    largest = min(200.0, 0.4 * big.size)
    front = _place_group(rng, canvas, pool, int(rng.integers(2, 11)), (24.0, max(32.0, largest)))
    return [replace(big, backdrop=True), *front]


def apply_condition(image: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """The image degradations the benchmark covers; ``none`` returns the image unchanged."""
    if condition == "blur":
        return cv2.GaussianBlur(image, (0, 0), rng.uniform(1.5, 3.0))
    if condition == "jpeg20":
        ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 20])
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
        if decoded is None:
            raise RuntimeError("OpenCV could not round-trip a JPEG")
        return np.ascontiguousarray(decoded[..., ::-1])
    if condition == "dark":  # an under-exposed photo: dim and a little noisy
        dim = (image.astype(np.float32) / 255.0) ** 1.6 * 255 * rng.uniform(0.2, 0.35)
        return np.clip(dim + rng.normal(0, 2.0, image.shape), 0, 255).astype(np.uint8)
    if condition == "overexposed":
        return np.clip(image.astype(np.float32) * rng.uniform(1.8, 2.4) + 30, 0, 255).astype(np.uint8)
    if condition != "none":
        raise ValueError(f"unknown scene condition {condition!r}")
    return image


def _choose(rng: np.random.Generator, options: tuple[tuple[str, float], ...]) -> str:
    names, weights = zip(*options, strict=True)
    return str(rng.choice(names, p=np.asarray(weights) / sum(weights)))


def make_scene(pool: Sequence[PoolFace], seed: int, index: int, kind: str | None = None) -> Scene:
    """Scene ``index`` of the benchmark with ``seed``: the same arguments give the same scene.

    Args:
        pool: the faces to paste.
        seed: the benchmark's seed.
        index: the scene's number.
        kind: None draws the kind from ``KINDS``; ``"poster"`` makes a poster scene (its own stream).

    Raises:
        InvalidValueError: the pool is empty or the kind is unknown.
    """
    if not pool:
        raise InvalidValueError("the face pool is empty: no crop had a confident face")
    if kind is None:
        rng = np.random.default_rng([seed, index])
        kind = _choose(rng, KINDS)
    elif kind == "poster":
        rng = np.random.default_rng([seed, index, POSTER_STREAM])
    else:
        raise InvalidValueError(f"unknown scene kind {kind!r}: None (drawn) or 'poster'")
    table = {"group": GROUP_SIZES, "small": SMALL_SIZES, "closeup": CLOSEUP_SIZES, "empty": GROUP_SIZES,
             "poster": GROUP_SIZES}[kind]
    width, height = table[int(rng.integers(len(table)))]
    canvas = background(rng, width, height)
    faces: list[SceneFace] = []
    if kind == "group":
        count = int(rng.integers(1, 21))
        largest = min(400.0, 0.45 * math.sqrt(width * height / count))
        faces = _place_group(rng, canvas, pool, count, (24.0, max(32.0, largest)))
    elif kind == "small":
        faces = _place_group(rng, canvas, pool, int(rng.integers(4, 21)), (16.0, 32.0))
    elif kind == "closeup":
        faces = _closeup(rng, canvas, pool)
    elif kind == "poster":
        faces = _poster(rng, canvas, pool)
    condition = _choose(rng, CONDITIONS)
    return Scene(index, kind, condition, apply_condition(canvas, condition, rng), tuple(faces))


def draw_scene(scene: Scene, detections: Sequence[Detection], matched: Sequence[int]) -> np.ndarray:
    """The scene with ground truth (green), matched boxes (blue) and other boxes (red)."""
    out = scene.image.copy()
    thick = max(1, round(max(out.shape[:2]) / 400))
    for face in scene.faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 200, 0), thick)
    for k, det in enumerate(detections):
        x1, y1, x2, y2 = (int(round(v)) for v in det.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (40, 90, 255) if k in matched else (255, 0, 0), thick)
    return out
