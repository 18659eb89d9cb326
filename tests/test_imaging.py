"""imaging.read_image: every supported input kind becomes upright uint8 RGB; every bad input a typed error.

All inputs are built here with Pillow/numpy (plus a hand-written PNG for what Pillow will not write:
48-bit RGB and a header claiming a huge size), and expected pixels are computed with numpy, not Pillow.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageSequence

from facial_demographics.imaging import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_FORMATS,
    EmptyImageError,
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
    encode_jpeg,
    encode_png,
    image_size,
    read_image,
)

H, W = 48, 64  # not square, so a transposed result cannot pass for the right one


def _pattern(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Flat 8x8 blocks of random colours: exact for lossless formats, and JPEG keeps them close."""
    blocks = np.random.default_rng(seed).integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(blocks.repeat(8, axis=0).repeat(8, axis=1))


def _encode(image: Image.Image | np.ndarray, fmt: str, **params: Any) -> bytes:
    im = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(
    width: int, height: int, bit_depth: int = 8, color_type: int = 2, pixels: bytes | None = None
) -> bytes:
    """A PNG written by hand; without ``pixels`` it has no IDAT at all (a header that lies about its size)."""
    out = b"\x89PNG\r\n\x1a\n" + _chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    )
    if pixels is not None:
        row = len(pixels) // height
        raw = b"".join(b"\x00" + pixels[i * row : (i + 1) * row] for i in range(height))
        out += _chunk(b"IDAT", zlib.compress(raw))
    return out + _chunk(b"IEND", b"")


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _check_rgb(out: np.ndarray, h: int, w: int) -> None:
    assert out.shape == (h, w, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous and out.flags.writeable


def _refused(kind: type[ImageError], source: Any, **kwargs: Any) -> ImageError:
    """Call read_image, check the exact error type and the ``source: reason`` message; return the error."""
    with pytest.raises(kind) as info:
        read_image(source, **kwargs)
    err = info.value
    assert type(err) is kind
    assert isinstance(err, ValueError)
    assert err.reason.strip()
    assert str(err) == f"{err.source}: {err.reason}"
    return err


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _assert_lossy_close(out: np.ndarray, expected: np.ndarray) -> None:
    """Lossy codecs (chroma subsampling on sharp random blocks) drift ~8 levels; flipped is ~80 away."""
    assert out.shape == expected.shape
    assert _mean_abs(out, expected) < 12
    assert _mean_abs(out, expected[::-1]) > 40


# --- formats --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params", "lossless"),
    [
        ("PNG", {}, True),
        ("BMP", {}, True),
        ("TIFF", {}, True),
        ("TIFF", {"compression": "tiff_lzw"}, True),
        ("WEBP", {"lossless": True}, True),
        ("WEBP", {"quality": 90}, False),
        ("JPEG", {"quality": 95}, False),
    ],
)
def test_each_format_round_trips(fmt: str, params: dict[str, Any], lossless: bool) -> None:
    image = _pattern()
    out = read_image(_encode(image, fmt, **params))
    _check_rgb(out, H, W)
    if lossless:
        np.testing.assert_array_equal(out, image)
    else:
        _assert_lossy_close(out, image)


def test_supported_formats_are_the_documented_ones() -> None:
    assert set(SUPPORTED_FORMATS) == {"JPEG", "PNG", "WEBP", "BMP", "TIFF"}
    assert DEFAULT_MAX_PIXELS == 50_000_000


def test_real_photo_jpeg(astronaut: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "astronaut.jpg"
    path.write_bytes(_encode(astronaut, "JPEG", quality=95))
    out = read_image(path)
    _check_rgb(out, *astronaut.shape[:2])
    assert _mean_abs(out, astronaut) < 3
    np.testing.assert_array_equal(out, read_image(path.read_bytes()))


def test_animated_webp_and_multipage_tiff_give_the_first_frame() -> None:
    first, second = _pattern(seed=1), _pattern(seed=2)
    frames = [Image.fromarray(first), Image.fromarray(second)]
    webp = _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True, duration=100)
    tiff = _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    for data in (webp, tiff):
        assert len(list(ImageSequence.Iterator(Image.open(io.BytesIO(data))))) == 2
    np.testing.assert_array_equal(read_image(webp), first)
    np.testing.assert_array_equal(read_image(tiff), first)


def test_mpo_camera_jpeg_is_read_as_jpeg() -> None:
    """Many cameras write MPO (a JPEG followed by more pictures): the first picture is the photo."""
    first, second = _pattern(seed=1), _pattern(seed=2)
    data = _encode(first, "MPO", save_all=True, append_images=[Image.fromarray(second)], quality=95)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    _assert_lossy_close(read_image(data), first)


# --- EXIF orientation -----------------------------------------------------------------------------


def test_jpeg_exif_orientation_6_is_rotated_upright() -> None:
    image = _pattern()
    out = read_image(_encode(image, "JPEG", quality=95, exif=_exif(6)))
    _check_rgb(out, W, H)  # 6 = "rotate 90 CW to display": width and height swap
    _assert_lossy_close(out, np.rot90(image, -1))
    assert image_size(_encode(image, "JPEG", exif=_exif(6))) == (H, W)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation(orientation: int) -> None:
    """Expected results follow the EXIF spec's wording, in numpy (rot90 with k>0 is counter-clockwise)."""
    a = _pattern()
    expected = {
        1: a,
        2: a[:, ::-1],  # mirror horizontal
        3: np.rot90(a, 2),  # rotate 180
        4: a[::-1],  # mirror vertical
        5: np.rot90(a[:, ::-1], 1),  # mirror horizontal, rotate 270 CW
        6: np.rot90(a, -1),  # rotate 90 CW
        7: np.rot90(a[:, ::-1], -1),  # mirror horizontal, rotate 90 CW
        8: np.rot90(a, 1),  # rotate 270 CW
    }[orientation]
    data = _encode(a, "PNG", exif=_exif(orientation))
    out = read_image(data)
    _check_rgb(out, *expected.shape[:2])
    np.testing.assert_array_equal(out, expected)
    assert image_size(data) == (expected.shape[1], expected.shape[0])


# --- pixel modes ----------------------------------------------------------------------------------


def test_grayscale_and_bilevel() -> None:
    gray = _pattern()[:, :, 0]
    np.testing.assert_array_equal(read_image(_encode(gray, "PNG")), np.dstack([gray] * 3))
    bits = gray > 127
    assert Image.fromarray(bits).mode == "1"
    expected = np.where(bits, 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(
        read_image(_encode(Image.fromarray(bits), "PNG")), np.dstack([expected] * 3)
    )


def test_palette_with_and_without_transparency() -> None:
    rng = np.random.default_rng(3)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    index = rng.integers(0, 16, (H, W), dtype=np.uint8)
    im = Image.frombytes("P", (W, H), index.tobytes())
    im.putpalette(palette.ravel().tolist())
    np.testing.assert_array_equal(read_image(_encode(im, "PNG")), palette[index])
    # Index 0 transparent: those pixels flatten onto white, the rest keep their palette colour.
    data = _encode(im, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    expected = np.where((index == 0)[:, :, None], np.uint8(255), palette[index])
    np.testing.assert_array_equal(read_image(data), expected)


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[:, :, None] / 255
    return np.rint(rgb * a + 255 * (1 - a)).astype(np.uint8)


def test_rgba_and_la_alpha_is_flattened_onto_white() -> None:
    rgb = _pattern()
    alpha = np.random.default_rng(4).integers(0, 256, (H, W), dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    out = read_image(_encode(np.dstack([rgb, alpha]), "PNG"))
    assert np.abs(out.astype(int) - _over_white(rgb, alpha)).max() <= 1
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])  # fully transparent: white
    np.testing.assert_array_equal(out[0, 1], rgb[0, 1])  # opaque: unchanged

    gray = rgb[:, :, 0]
    la = Image.fromarray(np.dstack([gray, alpha]))
    assert la.mode == "LA"
    out = read_image(_encode(la, "PNG"))
    assert np.abs(out.astype(int) - _over_white(np.dstack([gray] * 3), alpha)).max() <= 1


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk(fmt: str) -> None:
    rgb = _pattern()
    cmyk = np.dstack([255 - rgb, np.zeros((H, W), np.uint8)])  # K = 0: RGB is just 255 - CMY
    data = _encode(
        Image.frombytes("CMYK", (W, H), cmyk.tobytes()), fmt, **({"quality": 95} if fmt == "JPEG" else {})
    )
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = read_image(data)
    _check_rgb(out, H, W)
    if fmt == "TIFF":
        np.testing.assert_array_equal(out, rgb)
    else:
        _assert_lossy_close(out, rgb)


def _wide_gray() -> np.ndarray:
    values = np.linspace(0, 65535, H * W).reshape(H, W)
    return np.rint(values).astype(np.uint16)


@pytest.mark.parametrize(
    ("fmt", "mode"), [("PNG", "I;16"), ("TIFF", "I;16"), ("TIFF", "I;16B"), ("TIFF", "I")]
)
def test_16_bit_grayscale_is_scaled_to_8_bits(fmt: str, mode: str) -> None:
    values = _wide_gray()
    if mode == "I;16B":
        im = Image.frombytes(mode, (W, H), values.astype(">u2").tobytes())
    elif mode == "I":
        im = Image.frombytes(mode, (W, H), values.astype(np.int32).tobytes())
    else:
        im = Image.fromarray(values)
    data = _encode(im, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    expected = np.rint(values / 257).astype(np.uint8)
    np.testing.assert_array_equal(read_image(data), np.dstack([expected] * 3))


def test_float_tiff_in_unit_range() -> None:
    values = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    data = _encode(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    expected = np.rint(values.astype(np.float64) * 255).astype(np.uint8)
    np.testing.assert_array_equal(read_image(data), np.dstack([expected] * 3))


def test_48_bit_rgb_png() -> None:
    values = np.random.default_rng(5).integers(0, 65536, (H, W, 3), dtype=np.uint16)
    data = _png(W, H, bit_depth=16, color_type=2, pixels=values.astype(">u2").tobytes())
    out = read_image(data)
    _check_rgb(out, H, W)
    assert np.abs(out.astype(int) - values / 257).max() <= 1


# --- sources --------------------------------------------------------------------------------------


def test_every_source_kind_gives_the_same_pixels(tmp_path: Path) -> None:
    image = _pattern()
    data = _encode(image, "PNG")
    path = tmp_path / "face.png"
    path.write_bytes(data)
    moved = io.BytesIO(data)
    moved.seek(0, io.SEEK_END)  # file objects are read from their start
    with open(path, "rb") as handle:
        from_handle = read_image(handle)
        assert not handle.closed  # the caller's file stays the caller's
    read_end, write_end = os.pipe()  # a real non-seekable stream (the PNG fits the pipe buffer)
    os.write(write_end, data)
    os.close(write_end)
    with open(read_end, "rb") as pipe:
        assert not pipe.seekable()
        from_pipe = read_image(pipe)
    for out in [
        read_image(path),
        read_image(str(path)),
        read_image(data),
        read_image(bytearray(data)),
        read_image(memoryview(data)),
        read_image(io.BytesIO(data)),
        read_image(moved),
        from_pipe,
        from_handle,
    ]:
        _check_rgb(out, H, W)
        np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((4, 6), 7, np.uint8), np.full((4, 6, 3), 7, np.uint8)),
        (np.full((4, 6, 1), 7, np.uint8), np.full((4, 6, 3), 7, np.uint8)),
        (np.full((4, 6, 3), (1, 2, 3), np.uint8), np.full((4, 6, 3), (1, 2, 3), np.uint8)),
        (np.full((4, 6, 4), (10, 20, 30, 255), np.uint8), np.full((4, 6, 3), (10, 20, 30), np.uint8)),
        (np.full((4, 6, 4), (10, 20, 30, 0), np.uint8), np.full((4, 6, 3), 255, np.uint8)),
        (np.full((4, 6, 3), (0, 257, 65535), np.uint16), np.full((4, 6, 3), (0, 1, 255), np.uint8)),
        (np.full((4, 6, 3), (0, 0.5, 1), np.float32), np.full((4, 6, 3), (0, 128, 255), np.uint8)),
        (np.full((4, 6), 0.5, np.float64), np.full((4, 6, 3), 128, np.uint8)),
    ],
)
def test_array_sources(array: np.ndarray, expected: np.ndarray) -> None:
    out = read_image(array)
    _check_rgb(out, 4, 6)
    np.testing.assert_array_equal(out, expected)


def test_array_result_is_a_new_contiguous_array() -> None:
    image = _pattern()
    flipped = image[:, ::-1]  # a non-contiguous view
    out = read_image(flipped)
    _check_rgb(out, H, W)
    np.testing.assert_array_equal(out, flipped)
    out[:] = 0
    assert image.any()  # writing to the result never touches the input


# --- refusals -------------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "face.jpg"
    err = _refused(ImageNotFoundError, path)
    assert err.source == str(path)
    assert "no such file" in err.reason


def test_directory_is_refused(tmp_path: Path) -> None:
    err = _refused(ImageError, tmp_path)
    assert err.source == str(tmp_path) and "directory" in err.reason


def test_empty_inputs(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert _refused(EmptyImageError, path).source == str(path)
    assert _refused(EmptyImageError, b"").source == "<bytes>"
    assert _refused(EmptyImageError, io.BytesIO()).source == "<file>"
    assert "no pixels" in _refused(EmptyImageError, np.zeros((0, 5, 3), np.uint8)).reason


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow, on the cut TIFF header
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF", "WEBP"])
@pytest.mark.parametrize("keep", [0.5, 20])
def test_truncated_files(fmt: str, keep: float) -> None:
    """Cut mid-data (decode fails part way) or mid-header (the magic number survives): both 'truncated'."""
    data = _encode(_pattern(), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    cut = data[: int(len(data) * keep) if keep < 1 else int(keep)]
    err = _refused(TruncatedImageError, cut)
    assert err.source == "<bytes>"
    assert "truncated" in err.reason
    assert "0x" not in err.reason  # no object addresses from Pillow's messages


def test_truncated_jpeg_file_names_the_path(tmp_path: Path) -> None:
    data = _encode(_pattern(), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    err = _refused(TruncatedImageError, path)
    assert err.source == str(path)
    assert str(err).startswith(f"{path}: ")


def test_text_and_noise_are_not_images(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is a text file with a .jpg name\n" * 20)
    err = _refused(NotAnImageError, path)
    assert err.source == str(path) and "not an image" in err.reason
    noise = np.random.default_rng(6).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert _refused(NotAnImageError, b"\x00" + noise).source == "<bytes>"


def test_too_many_pixels_with_a_small_limit() -> None:
    data = _encode(_pattern(), "PNG")
    err = _refused(ImageTooLargeError, data, max_pixels=W * H - 1)
    assert f"{W}x{H}" in err.reason
    read_image(data, max_pixels=W * H)  # exactly at the limit is fine
    _refused(ImageTooLargeError, _pattern(), max_pixels=100)


@pytest.mark.parametrize("size", [(100_000, 100_000), (8_000, 8_000)])
def test_huge_header_is_refused_before_decoding(size: tuple[int, int]) -> None:
    """The PNG has no pixel data at all: a decode attempt would report truncation, not size, and take time.

    100000x100000 trips Pillow's own bomb guard, 8000x8000 (64 Mpx) only our default 50 Mpx limit.
    """
    data = _png(*size)
    start = time.perf_counter()
    err = _refused(ImageTooLargeError, data)
    assert time.perf_counter() - start < 0.5
    assert "pixels" in err.reason and err.source == "<bytes>"
    assert read_image(_pattern(8, 8)).shape == (8, 8, 3)  # and nothing global was left changed


def test_pillow_bomb_warning_becomes_our_error() -> None:
    """Between Pillow's warn (~89 Mpx) and error (~179 Mpx) limits, under ``-W error``, our limit raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _refused(ImageTooLargeError, _png(10_000, 10_000), max_pixels=200_000_000)


def test_header_only_png_reports_size_but_does_not_decode() -> None:
    data = _png(300, 200)
    assert image_size(data) == (300, 200)
    assert "truncated" in _refused(TruncatedImageError, data).reason


@pytest.mark.parametrize("fmt", ["GIF", "ICO", "PPM"])
def test_unsupported_formats(fmt: str) -> None:
    err = _refused(UnsupportedImageError, _encode(_pattern(), fmt))
    assert fmt in err.reason and "not supported" in err.reason


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((4, 6, 2), np.uint8), "shape"),
        (np.zeros((4, 6, 5), np.uint8), "shape"),
        (np.zeros(24, np.uint8), "shape"),
        (np.zeros((2, 4, 6, 3), np.uint8), "shape"),
        (np.zeros((4, 6, 3), np.int32), "dtype"),
        (np.zeros((4, 6, 3), bool), "dtype"),
        (np.full((4, 6, 3), 1.5, np.float32), "[0, 1]"),
        (np.full((4, 6, 3), -0.1, np.float64), "[0, 1]"),
        (np.full((4, 6, 3), np.nan, np.float32), "finite"),
    ],
)
def test_unsupported_arrays(array: np.ndarray, words: str) -> None:
    err = _refused(UnsupportedImageError, array)
    assert err.source == "<array>" and words in err.reason


def test_unsupported_source_objects(tmp_path: Path) -> None:
    assert _refused(UnsupportedImageError, 42).source == "<int>"
    path = tmp_path / "face.png"
    path.write_bytes(_encode(_pattern(), "PNG"))
    with open(path) as text_handle:
        err = _refused(UnsupportedImageError, text_handle)
    assert err.source == str(path) and "binary" in err.reason


def test_name_replaces_the_display_name() -> None:
    err = _refused(NotAnImageError, b"plain text", name="upload.jpg")
    assert err.source == "upload.jpg"
    assert str(err).startswith("upload.jpg: ")
    assert _refused(UnsupportedImageError, np.zeros(3, np.uint8), name="frame 7").source == "frame 7"


def test_errors_survive_pickling() -> None:
    """Batch workers in other processes send errors back by pickling them."""
    err = TruncatedImageError("a.jpg", "ends early")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is TruncatedImageError
    assert (copy.source, copy.reason, str(copy)) == ("a.jpg", "ends early", "a.jpg: ends early")


# --- encoders and size ----------------------------------------------------------------------------


def test_encode_png_and_jpeg() -> None:
    image = _pattern()
    png = encode_png(image)
    assert png.startswith(b"\x89PNG")
    np.testing.assert_array_equal(read_image(png), image)
    jpeg = encode_jpeg(image)
    assert jpeg.startswith(b"\xff\xd8\xff")
    _assert_lossy_close(read_image(jpeg), image)
    noisy = np.random.default_rng(7).integers(0, 256, (H, W, 3), dtype=np.uint8)
    assert len(encode_jpeg(noisy, quality=20)) < len(encode_jpeg(noisy, quality=95))
    np.testing.assert_array_equal(read_image(encode_png(image[:, :, 0])), np.dstack([image[:, :, 0]] * 3))


def test_encoders_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(_pattern(), quality=0)
    with pytest.raises(UnsupportedImageError):
        encode_png(np.zeros((4, 4, 2), np.uint8))


def test_image_size_of_arrays_and_files(tmp_path: Path) -> None:
    assert image_size(np.zeros((5, 7, 3), np.uint8)) == (7, 5)
    path = tmp_path / "face.webp"
    path.write_bytes(_encode(_pattern(), "WEBP"))
    assert image_size(path) == (W, H)
    with pytest.raises(ImageNotFoundError):
        image_size(tmp_path / "missing.png")


def test_inference_module_does_not_import_torch() -> None:
    code = "import sys, facial_demographics.imaging; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
