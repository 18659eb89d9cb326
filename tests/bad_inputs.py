"""The bad-input corpus, generated (fixed seed, no committed binaries): what a hostile or careless client
sends, with the error each must get. Used by the server and CLI tests."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

SEED = 13


@dataclass(frozen=True)
class BadInput:
    name: str
    data: bytes
    status: int  # the API's answer when it is the only file
    code: str
    says: str  # a phrase the error message must contain


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _frames(rng: np.random.Generator, n: int = 3) -> list[Image.Image]:
    return [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(n)]


def big_png(side: int) -> bytes:
    """A side × side black PNG: tiny on the wire (it compresses to almost nothing), large once decoded."""
    return _save(Image.new("RGB", (side, side)), "PNG", compress_level=9)


def float_tiff(width: int, height: int) -> bytes:
    """A 32-bit float TIFF (mode F, 4 bytes per pixel before conversion), deflate-compressed."""
    return _save(Image.new("F", (width, height), 0.5), "TIFF", compression="tiff_deflate")


def corpus() -> list[BadInput]:
    """Every bad input once; the same bytes on every call."""
    rng = np.random.default_rng(SEED)
    photo = _save(_frames(rng, 1)[0], "JPEG")
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + rng.bytes(200)
    avif_box = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + rng.bytes(200)
    frames = _frames(rng)
    gif = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return [
        BadInput("empty.jpg", b"", 422, "empty_file", "empty"),
        BadInput("cut.jpg", photo[: len(photo) // 2], 422, "truncated_image", "truncated"),
        BadInput("notes.jpg", b"Dear diary, this is not a photo.\n" * 20, 415, "not_an_image", "not an image"),
        BadInput("noise.bin", rng.bytes(4096), 415, "not_an_image", "not an image"),
        BadInput("phone.heic", heic, 415, "unsupported_format", "HEIC/HEIF images are not supported"),
        BadInput("photo.avif", avif_box, 415, "unsupported_format", "AVIF images are not supported"),
        BadInput("anim.gif", gif, 415, "unsupported_format", "animated GIF images are not supported"),
        BadInput("huge.png", big_png(1200), 413, "image_too_large", "over the limit"),
    ]


def animated(fmt: str) -> bytes:
    """An animated PNG (APNG) or WebP: accepted, their first frame is analysed."""
    frames = _frames(np.random.default_rng(SEED))
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
