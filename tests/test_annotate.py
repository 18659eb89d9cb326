"""Annotated images: the shipped font draws every character of a label, and labels stay inside the image
and off each other, on real faces found by the real detector."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from facial_demographics.annotate import (
    _FEMALE,
    _MALE,
    _UNKNOWN,
    FONT_PATH,
    Rect,
    draw,
    font_size,
    label,
    label_font,
    layout_labels,
)
from facial_demographics.pipeline import FaceAnalyzer
from facial_demographics.types import Face

MISSING = "\ue000"  # a private-use code point: no font has it, so it renders as the font's missing-glyph box


def _ink(text: str, size: int = 40) -> np.ndarray:
    mask = label_font(size).getmask(text)
    return np.asarray(mask, dtype=np.uint8).reshape(mask.size[1], mask.size[0])


@pytest.fixture(scope="module")
def row_faces(astronaut: np.ndarray) -> tuple[np.ndarray, list[Face]]:
    """Four real faces in a row (the astronaut's head four times, 1000x300), found by the bundled model."""
    row = np.concatenate([astronaut[0:300, 100:350]] * 4, axis=1)
    faces = FaceAnalyzer().analyze(row).faces
    assert len(faces) == 4
    return row, faces


def test_font_ships_with_its_licence() -> None:
    assert FONT_PATH.is_file() and (FONT_PATH.parent / "LICENSE_DEJAVU").is_file()


@pytest.mark.parametrize("char", ["–", "·", "%"])
def test_label_characters_are_real_glyphs(char: str) -> None:
    missing = _ink(MISSING)
    glyph = _ink(char)
    assert glyph.any(), char
    assert glyph.shape != missing.shape or not np.array_equal(glyph, missing), f"{char!r} drew the missing-glyph box"


def test_label_text_on_an_image_shows_the_en_dash(astronaut: np.ndarray) -> None:
    face = FaceAnalyzer().analyze(astronaut).faces[0]
    text = label(face)
    assert "–" in text
    # The dash inside the drawn label matches the dash glyph, not the missing-glyph box.
    font = label_font(40)
    canvas = Image.new("L", (40, 60))
    ImageDraw.Draw(canvas).text((5, 5), "–", fill=255, font=font)
    dash = np.asarray(canvas)
    canvas = Image.new("L", (40, 60))
    ImageDraw.Draw(canvas).text((5, 5), MISSING, fill=255, font=font)
    assert not np.array_equal(dash, np.asarray(canvas))
    # A dash is a short horizontal bar: its ink is much wider than tall.
    rows, cols = np.nonzero(dash)
    assert (cols.max() - cols.min() + 1) >= 2 * (rows.max() - rows.min() + 1)


def test_label_size_scales_with_the_image() -> None:
    assert font_size(256, 256) < font_size(1024, 768) < font_size(4000, 3000)
    assert font_size(64, 64) >= 11  # still readable on a thumbnail


def test_row_of_faces_labels_inside_and_apart(row_faces: tuple[np.ndarray, list[Face]]) -> None:
    row, faces = row_faces
    height, width = row.shape[:2]
    pen = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = label_font(font_size(width, height))
    sizes = []
    for face in faces:
        left, top, right, bottom = pen.textbbox((0, 0), label(face), font=font)
        sizes.append((right - left + 8, bottom - top + 8))
    assert sum(w for w, _ in sizes) > width  # wider than the image together: a naive layout would collide
    rects = layout_labels([f.box for f in faces], sizes, width, height)
    for r in rects:
        assert 0 <= r.x1 < r.x2 <= width and 0 <= r.y1 < r.y2 <= height
    assert all(a.overlap(b) == 0 for i, a in enumerate(rects) for b in rects[i + 1:])


def test_draw_shows_every_label(row_faces: tuple[np.ndarray, list[Face]]) -> None:
    row, faces = row_faces
    out = draw(row, faces)
    assert out.shape == row.shape and out.dtype == np.uint8
    # Recompute where draw put the labels, then check each one's fill colour is visible at its corner.
    pen = ImageDraw.Draw(Image.fromarray(out))
    font = label_font(font_size(row.shape[1], row.shape[0]))
    pad = max(2, font.size // 6)
    sizes = []
    for face in faces:
        left, top, right, bottom = pen.textbbox((0, 0), label(face), font=font)
        sizes.append((right - left + 2 * pad, bottom - top + 2 * pad))
    rects = layout_labels([f.box for f in faces], sizes, row.shape[1], row.shape[0])
    for face, rect in zip(faces, rects, strict=True):
        colour = {"female": _FEMALE, "male": _MALE}.get(face.gender or "", _UNKNOWN)
        assert tuple(out[int(rect.y1) + 1, int(rect.x1) + 1]) == colour


def test_labels_at_the_edges_stay_inside() -> None:
    # Boxes touching each corner of a small image, labels wider than the boxes.
    boxes = [(0.0, 0.0, 30.0, 30.0), (170.0, 0.0, 200.0, 30.0), (0.0, 170.0, 30.0, 200.0), (170.0, 170.0, 200.0, 200.0)]
    rects = layout_labels(boxes, [(90.0, 16.0)] * 4, 200, 200)
    assert all(0 <= r.x1 and r.x2 <= 200 and 0 <= r.y1 and r.y2 <= 200 for r in rects)
    assert all(a.overlap(b) == 0 for i, a in enumerate(rects) for b in rects[i + 1:])


def test_label_wider_than_the_image_is_clamped() -> None:
    (rect,) = layout_labels([(10.0, 10.0, 40.0, 40.0)], [(500.0, 20.0)], 100, 100)
    assert rect == Rect(0.0, 0.0, 100.0, 20.0)


def test_draw_on_a_narrow_image_shrinks_the_font(astronaut: np.ndarray) -> None:
    face = FaceAnalyzer().analyze(astronaut).faces[0]
    narrow = astronaut[:, 150:300]  # 150 px wide: the full label does not fit at the scaled size
    shifted = Face(**{**face.__dict__, "box": (face.box[0] - 150, face.box[1], face.box[2] - 150, face.box[3]),
                      "landmarks": [(x - 150, y) for x, y in face.landmarks]})
    out = draw(narrow, [shifted], numbered=True)
    assert out.shape == narrow.shape
    assert label(shifted, 0).startswith("#1 ")
