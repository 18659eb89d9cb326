"""Read a video file, a camera or a network stream with PyAV (FFmpeg) as upright RGB frames.

Each frame carries its presentation time from the container, so variable frame rate videos keep
their real timing; phone videos whose display matrix says "rotate 90°" come out upright. Damaged
packets are skipped and counted instead of ending the run; a source that fails while being read
(a camera unplugged, a stream cut) raises :class:`SourceLostError` after the frames already given.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

#: URL schemes handed to FFmpeg as network streams.
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
#: Seconds to wait for a network stream to open, and then for each read.
NETWORK_TIMEOUT = (10.0, 10.0)


class VideoError(UserError, ValueError):
    """A video input that cannot be read: its name and the reason are in the message."""


class SourceLostError(VideoError):
    """The source failed after some frames were read (a camera disconnected, a stream cut)."""

    def __init__(self, message: str, frames_read: int) -> None:
        super().__init__(message)
        self.frames_read = frames_read


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its index in the video (from 0), time in seconds and upright RGB pixels."""

    index: int
    time: float
    image: np.ndarray  # (H, W, 3) uint8 RGB


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a source before decoding it; sizes are upright (rotation applied)."""

    name: str
    kind: str  # "file", "camera" or "stream"
    width: int
    height: int
    fps: float | None  # the container's average rate; None when unknown
    frames: int | None  # frames in the file when the container says; None for cameras and streams
    duration: float | None  # seconds; None when unknown
    rotation: int  # degrees counter-clockwise applied to every frame to make it upright
    codec: str

    @property
    def live(self) -> bool:
        return self.kind != "file"


def describe(source: str | Path | int) -> tuple[str, str, str, str | None]:
    """How a user's INPUT is opened: ``(name, kind, target, format)``.

    A bare number is a camera index (``/dev/videoN`` on Linux, avfoundation on macOS) unless a file of
    that name exists; ``scheme://...`` is a network stream; anything else is a file.
    """
    text = str(source)
    if (isinstance(source, int) or text.isdigit()) and not Path(text).exists():
        index = int(text)
        if sys.platform == "darwin":
            return f"camera {index}", "camera", f"{index}:none", "avfoundation"
        return f"camera {index}", "camera", f"/dev/video{index}", "v4l2"
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in STREAM_SCHEMES:
        return text, "stream", text, None
    return text, "file", text, None


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words for an error, without PyAV's errno prefix."""
    return str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__


def _check_file(name: str) -> None:
    path = Path(name)
    if not path.exists():
        raise VideoError(f"{name}: no such file")
    if path.is_dir():
        raise VideoError(f"{name}: is a folder, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{name}: empty file (0 bytes)")


def _open_container(name: str, kind: str, target: str, fmt: str | None) -> Any:
    import av

    if kind == "file":
        _check_file(name)
    if kind == "camera" and fmt == "v4l2" and not Path(target).exists():
        raise VideoError(f"{name}: no such camera ({target} does not exist)")
    options = {"rtsp_transport": "tcp"} if target.lower().startswith("rtsp") else {}
    try:
        return av.open(target, "r", format=fmt, options=options,
                       timeout=NETWORK_TIMEOUT if kind != "file" else None)
    except av.FFmpegError as exc:
        what = {"file": "not a readable video", "camera": "camera cannot be opened",
                "stream": "stream cannot be opened"}[kind]
        raise VideoError(f"{name}: {what} (FFmpeg: {_reason(exc)})") from None


def _video_stream(container: Any, name: str) -> Any:
    if not container.streams.video:
        audio = len(container.streams.audio)
        if audio:
            raise VideoError(f"{name}: has only audio ({audio} audio stream{'s' * (audio != 1)}), no video")
        raise VideoError(f"{name}: has no video stream")
    return container.streams.video[0]


class VideoSource:
    """An open video input; iterate :meth:`frames` once, then :meth:`close` (or use ``with``).

    Raises:
        VideoError: from the constructor when the input cannot be opened or has no video.
    """

    def __init__(self, source: str | Path | int) -> None:
        name, kind, target, fmt = describe(source)
        self.container = _open_container(name, kind, target, fmt)
        try:
            self.stream = _video_stream(self.container, name)
        except VideoError:
            self.container.close()
            raise
        self.stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with 1080p
        self.damaged = 0  # packets FFmpeg could not decode (skipped)
        self.decoded = 0
        self._name, self._kind = name, kind
        self._packets = self._decoded()
        # The display rotation is only visible on decoded frames, and a file without a decodable frame
        # should fail here, at open: so the first frame is decoded now and kept for frames().
        try:
            self._first: Any = next(self._packets, None)
        except VideoError:
            self.container.close()
            raise
        if self._first is None:
            self.container.close()
            damaged = f" ({self.damaged} damaged packets)" if self.damaged else ""
            raise VideoError(f"{name}: no video frame could be decoded{damaged}")
        self.info = self._info(name, kind, _snap(getattr(self._first, "rotation", 0) or 0))

    def _info(self, name: str, kind: str, rotation: int) -> VideoInfo:
        s = self.stream
        rate = s.average_rate or s.guessed_rate
        fps = float(rate) if rate else None
        duration = float(s.duration * s.time_base) if s.duration and s.time_base else None
        if duration is None and self.container.duration:
            duration = self.container.duration / 1_000_000  # AV_TIME_BASE
        width, height = self._first.width, self._first.height
        if rotation % 180:
            width, height = height, width
        frames = int(s.frames) if kind == "file" and s.frames else None
        return VideoInfo(name, kind, width, height, fps, frames, duration if kind == "file" else None,
                         rotation, s.codec_context.name)

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    def frames(self, start: float = 0.0, end: float | None = None) -> Iterator[Frame]:
        """Upright RGB frames with ``start <= time <= end`` (seconds from the first frame).

        Frames before ``start`` are decoded and dropped (not converted), so indices stay exact.

        Raises:
            SourceLostError: reading failed part-way (the frames before it were yielded).
        """
        origin: float | None = None
        last = -np.inf
        fps = self.info.fps or 30.0
        first, self._first = self._first, None
        if first is None:
            raise RuntimeError("VideoSource.frames() can be iterated only once")
        for index, frame in enumerate(_chain(first, self._packets)):
            t = frame.time
            if t is None:  # no timestamps (raw streams): the nominal rate
                t = index / fps
            if origin is None:  # times count from the first frame (streams and cameras start anywhere)
                origin = float(t)
            # Times must grow for the tracker; a repeated or backward timestamp (broken muxers) is nudged.
            t = max(float(t) - origin, last + 1e-6)
            last = t
            if t < start - 1e-9:
                continue
            if end is not None and t > end + 1e-9:
                break
            rotation = _snap(getattr(frame, "rotation", 0) or 0) or self.info.rotation
            yield Frame(index, t, _upright(frame.to_ndarray(format="rgb24"), rotation))

    def _decoded(self) -> Iterator[Any]:
        import av

        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                raise SourceLostError(self._lost_message(exc), self.decoded) from None
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                self.damaged += 1
                continue
            except av.FFmpegError as exc:
                raise SourceLostError(self._lost_message(exc), self.decoded) from None
            for frame in frames:
                self.decoded += 1
                yield frame

    def _lost_message(self, exc: BaseException) -> str:
        what = {"camera": "camera stopped", "stream": "stream stopped", "file": "reading failed"}[self._kind]
        return f"{self._name}: {what} after {self.decoded} frames (FFmpeg: {_reason(exc)})"


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _snap(degrees: float) -> int:
    """Rotations are applied in steps of 90° (phones write 0, 90, 180 or 270)."""
    return int(round(float(degrees) / 90.0)) * 90 % 360


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate counter-clockwise by ``rotation`` degrees, as players honour the display matrix."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image
