"""``VideoAnalyzer``: faces tracked through a video, a camera or a stream, with stable per-track answers.

Usage::

    from facial_demographics import FaceAnalyzer
    from facial_demographics.video import VideoAnalyzer

    with VideoAnalyzer(FaceAnalyzer(), every=3).run("clip.mp4") as video:
        for frame in video:                 # FrameResult, one per decoded frame
            for face in frame.faces:        # analysed frames: this frame's answer and its track id
                ...
    for track in video.tracks:              # TrackSummary: combined age and gender per person
        print(track.track_id, track.age, track.gender)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .results import FrameResult, TrackSummary
from .source import Frame, VideoInfo, VideoSource
from .tracking import FaceTracker

if TYPE_CHECKING:
    from ..pipeline import FaceAnalyzer


class VideoAnalyzer:
    """Settings for analysing videos; :meth:`run` opens one.

    Args:
        analyzer: the image analyzer whose model and detector settings are used (default: the bundled model).
        every: analyse every Nth frame; the frames in between keep the tracks' last boxes and answers.
        max_fps: analyse at most this many frames per second of video (after ``every``).
        start: first second of the video to analyse.
        end: last second (None: to the end).
        lost_after: seconds a face may go undetected (occlusion, a missed detection) and keep its track.

    Raises:
        ValueError: a setting is out of range.
    """

    def __init__(self, analyzer: FaceAnalyzer | None = None, *, every: int = 1, max_fps: float | None = None,
                 start: float = 0.0, end: float | None = None, lost_after: float = 2.0) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        if max_fps is not None and not max_fps > 0:
            raise ValueError(f"max_fps must be positive, got {max_fps}")
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"need 0 <= start <= end, got start={start}, end={end}")
        if analyzer is None:
            from ..pipeline import FaceAnalyzer

            analyzer = FaceAnalyzer()
        self.analyzer = analyzer
        self.every, self.max_fps, self.start, self.end, self.lost_after = every, max_fps, start, end, lost_after

    def run(self, source: str | Path | int) -> VideoRun:
        """Open ``source`` (a file, a camera index or a stream URL); iterate the result for frames.

        Raises:
            VideoError: the source cannot be opened, has no video, or no frame of it can be decoded.
        """
        return VideoRun(self, VideoSource(source))


class VideoRun:
    """One video being analysed: iterate it once for :class:`FrameResult` objects.

    After the iteration (or an interruption) every track has ended and :attr:`tracks` holds the final
    answers; :attr:`remaining` holds those that were still open at the end (the others were reported
    in ``FrameResult.ended`` as they ended).
    """

    def __init__(self, settings: VideoAnalyzer, source: VideoSource) -> None:
        self.settings = settings
        self.source = source
        self.info: VideoInfo = source.info
        self.tracker = FaceTracker(settings.analyzer, lost_after=settings.lost_after,
                                   frame_rate=source.info.fps or 30.0)
        self.frames_seen = 0
        self.frames_analysed = 0
        self.remaining: list[TrackSummary] = []
        self.finished = False

    @property
    def damaged(self) -> int:
        """Packets that could not be decoded and were skipped."""
        return self.source.damaged

    @property
    def tracks(self) -> list[TrackSummary]:
        """Every track so far with its combined answer (final once the iteration is over)."""
        return self.tracker.tracks()

    def __enter__(self) -> VideoRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the open tracks and release the source (idempotent)."""
        if not self.finished:
            self.finished = True
            self.remaining = self.tracker.finish()
        self.source.close()

    def __iter__(self) -> Iterator[FrameResult]:
        """Raises ``SourceLostError`` when the source fails part-way; the frames before it were yielded."""
        s = self.settings
        last_analysed: FrameResult | None = None
        next_time = -1.0
        try:
            for frame in self.source.frames(s.start, s.end):
                due = self.frames_seen % s.every == 0 and frame.time >= next_time
                self.frames_seen += 1
                if due:
                    next_time = frame.time + (1.0 / s.max_fps if s.max_fps else 0.0) - 1e-6
                    last_analysed = self._analyse(frame)
                    yield last_analysed
                else:
                    tracks = last_analysed.tracks if last_analysed is not None else ()
                    yield FrameResult(frame.index, frame.time, False, tracks=tracks, image=frame.image)
        finally:
            self.close()

    def _analyse(self, frame: Frame) -> FrameResult:
        step = self.tracker.step(frame.image, frame.index, frame.time)
        self.frames_analysed += 1
        return FrameResult(frame.index, frame.time, True, step.faces, step.tracks, step.ended, frame.image)
