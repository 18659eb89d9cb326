"""Annotated copies of analysed images: a box, landmarks and a label such as "31 (26–37) · female 97 %".

Labels use DejaVu Sans Bold, shipped in ``fonts/`` (Pillow's built-in font has no en-dash or middle dot),
at a size that scales with the image. :func:`layout_labels` keeps every label inside the image and off
the others; the web page (``server/static/app.js``) places its labels by the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .types import Face

FONT_PATH = Path(__file__).parent / "fonts" / "DejaVuSans-Bold.ttf"
_FEMALE, _MALE, _UNKNOWN = (236, 72, 153), (59, 130, 246), (250, 204, 21)
_MIN_FONT = 8
_MAX_LEVELS = 8  # how many label heights above or below a box the layout tries before giving up


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle in pixels (x1, y1 inclusive; x2, y2 exclusive)."""

    x1: float
    y1: float
    x2: float
    y2: float

    def overlap(self, other: Rect) -> float:
        """Area shared with ``other`` (0 when they only touch)."""
        w = min(self.x2, other.x2) - max(self.x1, other.x1)
        h = min(self.y2, other.y2) - max(self.y1, other.y1)
        return max(0.0, w) * max(0.0, h)


def label(face: Face, index: int | None = None) -> str:
    """The text drawn next to a face, e.g. ``"#1 31 (26–37) · female 97 %"`` (the number when given)."""
    low, high = face.age_interval
    text = f"{face.age:.0f} ({low:.0f}–{high:.0f})"
    if face.gender is not None and face.gender_probability is not None:
        text += f" · {face.gender} {100 * face.gender_probability:.0f} %"
    return text if index is None else f"#{index + 1} {text}"


@lru_cache(maxsize=32)
def label_font(size: int) -> ImageFont.FreeTypeFont:
    """The label font at ``size`` pixels (cached: loading a TrueType face costs a file read)."""
    return ImageFont.truetype(str(FONT_PATH), size)


def font_size(width: int, height: int) -> int:
    """Label size for an image: about 1/40 of its longer side (13 px at 512 px), never under 11 px."""
    return max(11, round(max(width, height) / 40))


def layout_labels(
    boxes: Sequence[tuple[float, float, float, float]], sizes: Sequence[tuple[float, float]], width: int, height: int
) -> list[Rect]:
    """Place one label of ``sizes[i]`` (w, h) per box: inside the image and off the labels already placed.

    Each label prefers the spot just above its box (then below it), left-aligned with the box; when
    that is taken it moves one label height further out, or aligns right or centred, whichever is
    nearest. Only when nothing free is left does it take the spot with the least overlap.

    Args:
        boxes: face boxes (x1, y1, x2, y2) in image pixels.
        sizes: label (width, height) in pixels, one per box.
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        One :class:`Rect` per box, in the order given.
    """
    placed: list[Rect] = []
    for (x1, y1, x2, y2), (w, h) in zip(boxes, sizes, strict=True):
        candidates = _candidates(x1, y1, x2, y2, w, h, width, height)
        free = next((c for c in candidates if all(c.overlap(p) == 0 for p in placed)), None)
        placed.append(free or min(candidates, key=lambda c: sum(c.overlap(p) for p in placed)))
    return placed


def _candidates(x1: float, y1: float, x2: float, y2: float, w: float, h: float, width: int, height: int) -> list[Rect]:
    """Label spots around a box, nearest to "just above, left-aligned" first, all clamped into the image."""
    w, h = min(w, width), min(h, height)
    xs = [x1, x2 - w, (x1 + x2 - w) / 2]
    ys = [y1 - h * (k + 1) for k in range(_MAX_LEVELS)] + [y2 + h * k for k in range(_MAX_LEVELS)]
    spots: list[tuple[float, Rect]] = []
    for y in ys:
        for order, x in enumerate(xs):
            cx = min(max(0.0, x), width - w)
            cy = min(max(0.0, y), height - h)
            distance = abs(cy - (y1 - h)) + abs(cx - x1) + order  # ties: left-aligned, then right, then centred
            spots.append((distance, Rect(cx, cy, cx + w, cy + h)))
    spots.sort(key=lambda s: s[0])
    return [rect for _, rect in spots]


def draw(image: np.ndarray, faces: Sequence[Face], numbered: bool = False,
         tags: Sequence[str] | None = None) -> np.ndarray:
    """Return an annotated RGB copy of ``image``: boxes, landmarks and non-overlapping labels.

    Args:
        image: (H, W, 3) or (H, W, 4) uint8 RGB(A) pixels, as :func:`~facial_demographics.imaging.read_image` returns.
        faces: the faces to draw (``ImageResult.faces``).
        numbered: prefix each label with ``#1``, ``#2``, ... in the order of ``faces``.
        tags: prefix each label with this text instead (e.g. a video track's ``#3``), one per face.

    Returns:
        A new (H, W, 3) uint8 array.
    """
    canvas = Image.fromarray(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
    pen = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 320))
    texts = [label(face, i if numbered else None) for i, face in enumerate(faces)]
    if tags is not None:
        texts = [f"{tag} {text}" for tag, text in zip(tags, texts, strict=True)]
    font = _fitting_font(pen, texts, canvas.width, canvas.height)
    pad = max(2, font.size // 6)
    extents = [pen.textbbox((0, 0), text, font=font) for text in texts]
    sizes = [(right - left + 2 * pad, bottom - top + 2 * pad) for left, top, right, bottom in extents]
    colours = [{"female": _FEMALE, "male": _MALE}.get(face.gender or "", _UNKNOWN) for face in faces]
    for face, colour in zip(faces, colours, strict=True):
        pen.rectangle(face.box, outline=colour, width=width)
        r = max(1.0, width * 0.75)
        for x, y in face.landmarks:
            pen.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    # Labels after all boxes, so no box line is drawn across another face's label.
    spots = layout_labels([f.box for f in faces], sizes, canvas.width, canvas.height)
    for text, (left, top, _, _), spot, colour in zip(texts, extents, spots, colours, strict=True):
        pen.rectangle((spot.x1, spot.y1, spot.x2 - 1, spot.y2 - 1), fill=colour)
        pen.text((spot.x1 + pad - left, spot.y1 + pad - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def _fitting_font(pen: ImageDraw.ImageDraw, texts: Sequence[str], width: int, height: int) -> ImageFont.FreeTypeFont:
    """The scaled label font, shrunk when the longest label would not fit across the image."""
    size = font_size(width, height)
    while size > _MIN_FONT and texts:
        font = label_font(size)
        if max(pen.textlength(t, font=font) for t in texts) + size // 2 <= width:
            return font
        size -= 1
    return label_font(size)
