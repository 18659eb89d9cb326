"""What ``facial-demographics video`` writes: ``annotated.mp4``, ``frames.jsonl`` and ``tracks.jsonl``.

Everything is streamed: each analysed frame's line is flushed when it is written, each track's line when
the track ends, and the video is fragmented MP4 (H.264), which stays playable up to its last fragment
even when the run is killed. ``close`` finishes all three on success, Ctrl-C and errors alike.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from .results import FrameResult, TrackSummary
from .source import VideoError, VideoInfo
from .tracking import draw_faces

ANNOTATED, FRAMES, TRACKS = "annotated.mp4", "frames.jsonl", "tracks.jsonl"
#: Output timestamps in 1/90,000 s (MPEG's clock): fine enough to keep a variable frame rate exactly.
_TIME_BASE = Fraction(1, 90_000)


class AnnotatedVideoWriter:
    """H.264 in fragmented MP4, one output frame per input frame at the input's times.

    Raises:
        VideoError: the file cannot be created.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float | None) -> None:
        import av

        # yuv420p needs even sides: an odd last row or column is dropped.
        self.width, self.height = max(2, width - width % 2), max(2, height - height % 2)
        rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(30)
        try:
            # Fragments at every keyframe (2 s apart): a killed run leaves a playable file.
            self.container = av.open(str(path), "w", format="mp4",
                                     options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(f"{path}: cannot write the annotated video ({exc})") from None
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.codec_context.time_base = _TIME_BASE
        self.stream.options = {"preset": "veryfast", "crf": "23", "g": str(max(1, round(2 * float(rate))))}
        # No B-frames: they make the muxer shift every timestamp (fragmented MP4 has no edit list to undo
        # it), and each frame must show at its input time.
        self.stream.codec_context.max_b_frames = 0
        self.frames = 0
        self._last_pts = -1
        self._closed = False

    def write(self, image: np.ndarray, time: float) -> None:
        """Encode one RGB frame shown at ``time`` seconds."""
        import av

        if image.shape[0] < self.height or image.shape[1] < self.width:  # a source that changed size
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: self.height, : self.width]), format="rgb24")
        pts = max(int(round(time / _TIME_BASE)), self._last_pts + 1)  # strictly increasing for the muxer
        frame.pts, frame.time_base = pts, _TIME_BASE
        self._last_pts = pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()


class JsonLines:
    """A JSON Lines file written and flushed one record at a time."""

    def __init__(self, path: Path) -> None:
        try:
            self.stream: IO[str] = open(path, "w", encoding="utf-8")
        except OSError as exc:
            raise VideoError(f"{path}: cannot write here ({exc.strerror or exc})") from None
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()
        self.count += 1

    def close(self) -> None:
        self.stream.close()


def prepare_out_dir(out: Path) -> None:
    """Create ``out`` (and its parents) before any work.

    Raises:
        VideoError: ``out`` is a file or cannot be created.
    """
    if out.exists() and not out.is_dir():
        raise VideoError(f"{out}: --out needs a folder, and this is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VideoError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None


class VideoOutputs:
    """The three outputs of one run in folder ``out``; :meth:`close` always leaves them complete.

    Args:
        out: the output folder (created when missing).
        info: the source, for the video's size and rate.
        video: write ``annotated.mp4`` (``--no-video`` turns it off).
    """

    def __init__(self, out: Path, info: VideoInfo, video: bool = True) -> None:
        prepare_out_dir(out)
        self.out = out
        self.frames = JsonLines(out / FRAMES)
        self.tracks = JsonLines(out / TRACKS)
        self.video: AnnotatedVideoWriter | None = None
        if video:
            self.video = AnnotatedVideoWriter(out / ANNOTATED, info.width, info.height, info.fps)
        self._closed = False

    def write(self, result: FrameResult) -> None:
        """Write one frame: its line when analysed, its annotated copy, and the tracks that ended at it."""
        if result.analysed:
            self.frames.write(result.to_dict())
        for track in result.ended:
            self.tracks.write(track.to_dict())
        if self.video is not None and result.image is not None:
            from ..annotate import draw

            faces, tags = draw_faces(result.faces, result.tracks)
            self.video.write(draw(result.image, faces, tags=tags) if faces else result.image, result.time)

    def close(self, remaining: list[TrackSummary]) -> None:
        """Write the tracks still open at the end and close every file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for track in remaining:
                self.tracks.write(track.to_dict())
        finally:
            self.frames.close()
            self.tracks.close()
            if self.video is not None:
                self.video.close()
