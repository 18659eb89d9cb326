"""Turn any supported photo into the one form every later stage expects: an (H, W, 3) uint8 RGB array.

The odd cases are settled here once, so detection, alignment, the model and the server never see them:
EXIF orientation (phones store portraits sideways), palettes, transparency, CMYK and 16-bit data.
Whatever cannot be read is refused with a typed :class:`ImageError` naming the input and the reason,
so a batch can record the failure and go on.

Formats: JPEG (also MPO, the multi-picture JPEG many cameras write; its first picture is the photo),
PNG, WebP, BMP and TIFF; animated WebP and multi-page TIFF give their first frame. Everything else
Pillow could open (GIF, ICO, PSD, JPEG 2000, PPM, ...) is refused as unsupported: a short list keeps
the decoders we run on untrusted uploads few, and the behaviour documented (PDF and the like, which
Pillow cannot read at all, are "not an image"). Colour profiles are not
applied (pixels are taken as sRGB), which is what face models trained on web photos expect.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO, Literal

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import UserError

#: Largest image accepted by default (a 50-megapixel photo decodes to 150 MB of RGB).
DEFAULT_MAX_PIXELS = 50_000_000
#: Pillow format names accepted (``Image.format``).
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
_FORMAT_ALIASES = {"MPO": "JPEG"}
#: Magic numbers: a file that starts like one of these but fails to open is damaged, not "not an image".
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",
    b"MM\x00+": "TIFF",
}
#: What Pillow raises for damaged data (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)

EncodedSource = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]
ImageSource = EncodedSource | np.ndarray | Image.Image
#: Channel order of a numpy array: "rgb" (Pillow, scikit-image, matplotlib) or "bgr" (OpenCV's cv2.imread).
Channels = Literal["rgb", "bgr"]


class ImageError(UserError, ValueError):
    """An input that cannot be turned into an RGB image; ``str()`` is ``"<source>: <reason>"``."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str]]:
        # ``args`` holds the joined message, so the default pickling (worker processes) would fail.
        return (type(self), (self.source, self.reason))


class ImageNotFoundError(ImageError):
    """The path does not exist."""


class EmptyImageError(ImageError):
    """Zero bytes, or an array without pixels."""


class TruncatedImageError(ImageError):
    """A recognised image whose data ends early or is corrupt part way."""


class NotAnImageError(ImageError):
    """Content that no image decoder recognises (text, random bytes, ...)."""


class ImageTooLargeError(ImageError):
    """More pixels than ``max_pixels``: refused from the header, before anything is decoded."""


class UnsupportedImageError(ImageError):
    """A real image in a format, mode, shape or dtype this module does not accept."""


def read_image(
    source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None, channels: Channels = "rgb"
) -> np.ndarray:
    """Read ``source`` into a new, C-contiguous (H, W, 3) uint8 RGB array, upright per its EXIF.

    Args:
        source: a path, encoded bytes, a binary file object (read from its start), a ``PIL.Image.Image``
            (any mode; EXIF orientation applied) or an array: (H, W), (H, W, 1), (H, W, 3) or
            (H, W, 4) of uint8, uint16 or float in [0, 1].
        max_pixels: refuse larger images (checked from the header, before decoding).
        name: display name used in errors (e.g. an upload's filename).
        channels: the channel order of a 3- or 4-channel array: "rgb", or "bgr" for OpenCV's
            ``cv2.imread`` (BGR/BGRA). Files and PIL images carry their own order, so it applies to arrays only.

    Returns:
        The RGB pixels.

    Raises:
        ImageError: a subclass naming the reason for anything it refuses.
        ValueError: ``channels`` is neither "rgb" nor "bgr".
    """
    if channels not in ("rgb", "bgr"):
        raise ValueError(f'channels must be "rgb" or "bgr", got {channels!r}')
    if isinstance(source, np.ndarray):
        if channels == "bgr" and source.ndim == 3 and source.shape[2] in (3, 4):
            source = source[:, :, [2, 1, 0, 3][: source.shape[2]]]  # BGR(A) -> RGB(A); _array_to_rgb copies
        return _array_to_rgb(source, name or "<array>", max_pixels)
    if isinstance(source, Image.Image):
        return _read_pil(source, name or getattr(source, "filename", "") or "<PIL image>", max_pixels)
    with _open(source, name) as (im, label):
        _check_pixels(im.width, im.height, max_pixels, label)
        try:
            im.load()  # a truncated file raises here, as LOAD_TRUNCATED_IMAGES is left off
        except _DECODE_ERRORS as exc:
            raise TruncatedImageError(
                label, f"decoding failed part way, truncated or corrupt ({exc})"
            ) from None
        try:
            ImageOps.exif_transpose(im, in_place=True)
        except _DECODE_ERRORS:
            pass  # a malformed EXIF block should not cost the picture: keep it as stored
        return _pil_to_rgb(im, label)


def image_size(source: ImageSource, *, name: str | None = None) -> tuple[int, int]:
    """(width, height) as :func:`read_image` would return it (EXIF rotation applied), header only."""
    if isinstance(source, np.ndarray):
        if source.ndim < 2:
            raise UnsupportedImageError(name or "<array>", f"array shape {source.shape} is not an image")
        return int(source.shape[1]), int(source.shape[0])
    if isinstance(source, Image.Image):
        return _upright_size(source)
    with _open(source, name) as (im, _):
        return _upright_size(im)


def _upright_size(im: Image.Image) -> tuple[int, int]:
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS:
        orientation = 1
    return (im.height, im.width) if orientation in (5, 6, 7, 8) else (im.width, im.height)


def _read_pil(im: Image.Image, label: str, max_pixels: int | None) -> np.ndarray:
    """A caller's PIL image (already opened, maybe not yet decoded): any mode Pillow can convert."""
    _check_pixels(im.width, im.height, max_pixels, label)
    try:
        upright = ImageOps.exif_transpose(im)  # a copy: the caller's image is left as it was
    except _DECODE_ERRORS as exc:
        raise TruncatedImageError(label, f"decoding failed part way, truncated or corrupt ({exc})") from None
    return _pil_to_rgb(upright, label)


#: Peak bytes per pixel while :func:`read_image` decodes a picture stored in each Pillow mode (Pillow's
#: own buffer, the conversions and the RGB result), measured on 16 MP images; anything not listed
#: (alpha, 32-bit integer and float data) takes the largest figure.
_DECODE_BYTES_PER_PIXEL = {"1": 11, "L": 11, "P": 11, "RGB": 14, "YCbCr": 14, "CMYK": 14, "LAB": 14,
                           "HSV": 14, "I;16": 14, "I;16B": 14, "I;16L": 14, "I;16N": 14}
_DECODE_BYTES_MAX = 17


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image's header says, read without decoding its pixels."""

    width: int
    height: int
    mode: str  # Pillow's mode: "RGB", "L", "P", "RGBA", "I;16", "F", ...
    format: str
    transparency: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decode_bytes(self) -> int:
        """Peak memory :func:`read_image` needs for it (an upper estimate), for memory budgets."""
        per_pixel = _DECODE_BYTES_MAX if self.transparency else _DECODE_BYTES_PER_PIXEL.get(
            self.mode, _DECODE_BYTES_MAX)
        return self.pixels * per_pixel


def read_header(source: EncodedSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                name: str | None = None) -> ImageHeader:
    """Read and check an encoded image's header (format, size, mode) without decoding its pixels.

    Args:
        source: a path, encoded bytes or a binary file object.
        max_pixels: refuse larger images, as :func:`read_image` would (None: no limit).
        name: display name used in errors.

    Returns:
        The header's size (as stored, before EXIF rotation), mode and format.

    Raises:
        ImageError: the same subclasses :func:`read_image` raises for the header.
    """
    with _open(source, name) as (im, label):
        _check_pixels(im.width, im.height, max_pixels, label)
        return ImageHeader(im.width, im.height, im.mode, im.format or "unknown", "transparency" in im.info)


def encode_png(array: np.ndarray) -> bytes:
    """Lossless PNG bytes of any array :func:`read_image` accepts (annotated results, API responses)."""
    return _encode(array, "PNG")


def encode_jpeg(array: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of any array :func:`read_image` accepts; smaller than PNG for photos."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    return _encode(array, "JPEG", quality=quality)


def _encode(array: np.ndarray, fmt: str, **params: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_array_to_rgb(array, "<array>", None)).save(buffer, format=fmt, **params)
    return buffer.getvalue()


@contextmanager
def _open(source: EncodedSource, name: str | None) -> Iterator[tuple[Image.Image, str]]:
    """Open lazily (header only) and check the format; closes whatever it opened."""
    with ExitStack() as stack:
        stream, label = _stream(source, name, stack)
        im = stack.enter_context(_identify(stream, label))
        fmt = _FORMAT_ALIASES.get(im.format or "", im.format or "unknown")
        if fmt not in SUPPORTED_FORMATS:
            if getattr(im, "is_animated", False):
                fmt = f"animated {fmt}"
            raise UnsupportedImageError(label, _unsupported(fmt))
        yield im, label


def _unsupported(fmt: str) -> str:
    return f"{fmt} images are not supported (supported: {', '.join(SUPPORTED_FORMATS)}; convert it to JPEG or PNG)"


def _iso_media_kind(head: bytes) -> str | None:
    """HEIC/HEIF and AVIF (ISO base media files, as phones write them) from their ``ftyp`` brand."""
    if head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand in (b"avif", b"avis"):
        return "AVIF"
    if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
        return "HEIC/HEIF"
    return None


def _stream(source: EncodedSource, name: str | None, stack: ExitStack) -> tuple[IO[bytes], str]:
    if isinstance(source, str | os.PathLike):
        label = name or os.fsdecode(source)
        try:
            return stack.enter_context(open(source, "rb")), label
        except FileNotFoundError:
            raise ImageNotFoundError(label, "no such file") from None
        except IsADirectoryError:
            raise ImageError(label, "is a directory, not an image file") from None
        except OSError as exc:
            raise ImageError(label, f"cannot open ({exc.strerror or exc})") from None
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(source), name or "<bytes>"
    if hasattr(source, "read"):
        file_name = getattr(source, "name", None)
        label = name or (file_name if isinstance(file_name, str) else "<file>")
        if isinstance(source, io.TextIOBase):
            raise UnsupportedImageError(label, "file object is in text mode; open it in binary mode ('rb')")
        seekable = getattr(source, "seekable", None)
        if callable(seekable) and seekable():
            return source, label
        return io.BytesIO(source.read()), label  # pipes and sockets: Pillow needs to seek, so buffer
    raise UnsupportedImageError(
        name or f"<{type(source).__name__}>", "expected a path, bytes, a binary file object or a numpy array"
    )


def _identify(stream: IO[bytes], label: str) -> Image.Image:
    """``Image.open`` with its failures sorted into empty, damaged and not-an-image."""
    try:
        return Image.open(stream)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard: an error above ~179 Mpx, and its ~89 Mpx warning when filters make it one.
        # No warnings filter is set here (filters are process-wide, not thread-safe): without one the
        # warning is only printed, and the default max_pixels refuses those images anyway.
        raise ImageTooLargeError(label, f"refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, *_DECODE_ERRORS) as exc:
        stream.seek(0)
        head = stream.read(16)
        if not head:
            raise EmptyImageError(label, "empty file (0 bytes)") from None
        media = _iso_media_kind(head)
        if media:  # Pillow has no HEIC decoder: say what the file is rather than "not an image"
            raise UnsupportedImageError(label, _unsupported(media)) from None
        kind = next((k for sig, k in _SIGNATURES.items() if head.startswith(sig)), None)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            kind = "WEBP"
        if kind:
            # Pillow's "cannot identify image file <BytesIO at 0x...>" says nothing useful; drop it.
            detail = "" if isinstance(exc, UnidentifiedImageError) else f" ({exc})"
            raise TruncatedImageError(label, f"{kind} header is truncated or corrupt{detail}") from None
        raise NotAnImageError(label, "not an image: content not recognised by any image decoder") from None


def _check_pixels(width: int, height: int, max_pixels: int | None, label: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            label, f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,}"
        )


def _pil_to_rgb(im: Image.Image, label: str) -> np.ndarray:
    bands = im.getbands()
    try:
        if im.mode in ("I", "F") or im.mode.startswith("I;"):
            return _array_to_rgb(_wide_to_uint8(np.asarray(im)), label, None)
        if "A" in bands or "a" in bands or "transparency" in im.info:
            return _flatten_alpha(np.asarray(im.convert("RGBA")))
        return np.array(im.convert("RGB"), dtype=np.uint8, order="C")
    except (ValueError, OSError) as exc:
        raise UnsupportedImageError(label, f"cannot convert {im.mode} pixels to RGB ({exc})") from None


def _wide_to_uint8(a: np.ndarray) -> np.ndarray:
    """Scale 16/32-bit integer data (taken as 0..65535) or float data (0..1, 0..255 or 0..65535) to 8 bits."""
    if a.dtype.kind == "f":
        # float32 and in place: a float64 pipeline took ~30 bytes per pixel at its peak (see decode_cost).
        a = np.nan_to_num(a.astype(np.float32), copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        high = float(a.max(initial=0.0))
        scale = 1.0 if high <= 1.0 else 255.0 if high <= 255.0 else 65535.0
        a *= np.float32(255.0 / scale)
        np.clip(a, 0.0, 255.0, out=a)
        return np.rint(a, out=a).astype(np.uint8)
    return ((np.clip(a, 0, 65535).astype(np.uint32) + 128) // 257).astype(np.uint8)


def _array_to_rgb(a: np.ndarray, label: str, max_pixels: int | None) -> np.ndarray:
    """Validate a caller's array and return a new uint8 RGB copy (never a view of the input)."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise UnsupportedImageError(label, f"array shape {a.shape} is not (H,W), (H,W,1), (H,W,3) or (H,W,4)")
    if a.size == 0:
        raise EmptyImageError(label, f"array shape {a.shape} has no pixels")
    _check_pixels(a.shape[1], a.shape[0], max_pixels, label)
    if a.dtype == np.uint8:
        pass
    elif a.dtype.kind == "u" and a.dtype.itemsize == 2:
        a = _wide_to_uint8(a)
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise UnsupportedImageError(label, "float arrays must hold finite values in [0, 1]")
        a = _wide_to_uint8(a)
    else:
        raise UnsupportedImageError(label, f"array dtype {a.dtype} is not uint8, uint16 or float in [0, 1]")
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 4:
        return _flatten_alpha(a)
    return np.array(a, dtype=np.uint8, order="C", copy=True)


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """Composite onto white, as viewers show transparency: a black fill would invent dark 'hair' edges."""
    # uint16 and in place (255 * 255 + 127 fits): uint32 temporaries took ~50 bytes per pixel at the peak.
    alpha = rgba[:, :, 3:].astype(np.uint16)
    out = rgba[:, :, :3].astype(np.uint16)
    out *= alpha
    np.subtract(255, alpha, out=alpha)
    alpha *= 255
    out += alpha
    del alpha
    out += 127
    out //= 255
    return out.astype(np.uint8)
