"""Annotated copies of analysed images: a box, landmarks and a label such as "31 (26–37) · female 97 %"."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .types import Face

_FEMALE, _MALE, _UNKNOWN = (236, 72, 153), (59, 130, 246), (250, 204, 21)


def label(face: Face) -> str:
    low, high = face.age_interval
    text = f"{face.age:.0f} ({low:.0f}–{high:.0f})"
    if face.gender is not None and face.gender_probability is not None:
        text += f" · {face.gender} {100 * face.gender_probability:.0f} %"
    return text


def draw(image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """Return an annotated RGB copy; line width and font scale with the image."""
    canvas = Image.fromarray(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
    pen = ImageDraw.Draw(canvas)
    scale = max(canvas.size) / 640
    width = max(1, round(2 * scale))
    font = ImageFont.load_default(size=max(10, round(14 * scale)))
    for face in faces:
        colour = {"female": _FEMALE, "male": _MALE}.get(face.gender or "", _UNKNOWN)
        x1, y1, x2, y2 = face.box
        pen.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        r = max(1.0, 1.5 * scale)
        for x, y in face.landmarks:
            pen.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        text = label(face)
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = y1 - th - 2 * width if y1 - th - 2 * width >= 0 else y2 + width
        pen.rectangle((x1, ty, x1 + tw + 2 * width, ty + th + 2 * width), fill=colour)
        pen.text((x1 + width - left, ty + width - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)
