"""``VideoAnalyzer``: faces tracked through a video, a camera or a stream, with stable per-track answers.

Usage::

    from facial_demographics import FaceAnalyzer
    from facial_demographics.video import VideoAnalyzer

    with VideoAnalyzer(FaceAnalyzer(), every=3).run("clip.mp4") as video:
        for frame in video:                 # FrameResult, one per decoded frame
            for face in frame.faces:        # analysed frames: this frame's answer and its track id
                ...
    for track in video.tracks:              # TrackSummary: combined answer per track, with its person_id
        print(track.track_id, track.person_id, track.age, track.gender)
    for person in video.people:             # PersonSummary: one answer per person over all their tracks
        print(person.person_id, person.tracks, person.seconds, person.age, person.gender)
    print(video.summary(bands=AgeBands.parse("18,35,55")).to_dict())   # the population, counted in people
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .people import People, PeopleOverTime, PersonSummary, gender_counts, people_over_time, summarize
from .reid import REID_FRAMES, REID_THRESHOLD, Reidentifier, reid_unavailable
from .results import FrameResult, TrackSummary
from .source import Frame, VideoInfo, VideoSource
from .tracking import FaceTracker

if TYPE_CHECKING:
    from ..pipeline import FaceAnalyzer
    from ..population import AgeBands, PopulationSummary


class VideoAnalyzer:
    """Settings for analysing videos; :meth:`run` opens one.

    Args:
        analyzer: the image analyzer whose model and detector settings are used (default: the bundled model).
        every: analyse every Nth frame; the frames in between keep the tracks' last boxes and answers.
        max_fps: analyse at most this many frames per second of video (after ``every``).
        start: first second of the video to analyse.
        end: last second (None: to the end).
        lost_after: seconds a face may go undetected (occlusion, a missed detection) and keep its track.
        reid: join the tracks of a person who left and came back (``video.reid``; needs dlib, else off
            with a note in :attr:`VideoRun.notes`); False: every track is its own person.
        reid_threshold: largest distance between two tracks' mean face descriptors for one person.
        reid_frames: frames described per track.

    Raises:
        ValueError: a setting is out of range.
    """

    def __init__(self, analyzer: FaceAnalyzer | None = None, *, every: int = 1, max_fps: float | None = None,
                 start: float = 0.0, end: float | None = None, lost_after: float = 2.0, reid: bool = True,
                 reid_threshold: float = REID_THRESHOLD, reid_frames: int = REID_FRAMES) -> None:
        if reid_threshold < 0 or reid_frames < 1:
            raise ValueError(f"need reid_threshold >= 0 and reid_frames >= 1, got {reid_threshold}, {reid_frames}")
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
        self.reid, self.reid_threshold, self.reid_frames = reid, reid_threshold, reid_frames

    def run(self, source: str | Path | int) -> VideoRun:
        """Open ``source`` (a file, a camera index or a stream URL); iterate the result for frames.

        Raises:
            VideoError: the source cannot be opened, has no video, or no frame of it can be decoded.
        """
        return VideoRun(self, VideoSource(source))


class VideoRun:
    """One video being analysed: iterate it once for :class:`FrameResult` objects.

    After the iteration (or an interruption) every track has ended and :attr:`tracks` holds the final
    answers, each with its ``person_id``; :attr:`remaining` holds those that were still open at the end
    (the others were reported in ``FrameResult.ended`` as they ended). :attr:`people` holds one answer
    per person and :meth:`summary` the population summary over them. :attr:`notes` says what was off
    (re-identification without dlib).
    """

    def __init__(self, settings: VideoAnalyzer, source: VideoSource) -> None:
        self.settings = settings
        self.source = source
        self.info: VideoInfo = source.info
        self.tracker = FaceTracker(settings.analyzer, lost_after=settings.lost_after,
                                   frame_rate=source.info.fps or 30.0)
        self.notes: list[str] = []
        self.reid: Reidentifier | None = None
        if settings.reid:
            missing = reid_unavailable()
            if missing is None:
                self.reid = Reidentifier(settings.analyzer.model.bundle.input_size, settings.reid_frames)
            else:
                self.notes.append(missing)
        self.grouping = People(self.reid, settings.reid_threshold)
        self.frames_seen = 0
        self.frames_analysed = 0
        self.faces_found = 0  # faces detected in analysed frames
        self.analysed_times: list[float] = []
        self.remaining: list[TrackSummary] = []
        self.finished = False

    @property
    def damaged(self) -> int:
        """Packets that could not be decoded and were skipped."""
        return self.source.damaged

    @property
    def tracks(self) -> list[TrackSummary]:
        """Every track so far with its combined answer (final once the iteration is over); ended tracks
        carry their ``person_id``."""
        return [self.grouping.annotate(t) for t in self.tracker.tracks()]

    @property
    def people(self) -> list[PersonSummary]:
        """One answer per person, over all their tracks, in order of first appearance. While the video
        runs, only people whose tracks have ended are included; after it, everyone."""
        return self.grouping.people()

    def over_time(self) -> PeopleOverTime:
        """People in view and people seen so far at each analysed frame (final once the run is over)."""
        return people_over_time(self.people, self.tracks, self.analysed_times)

    def summary(self, bands: AgeBands | str | None = None, *, interval: float | None = None,
                context: dict[str, Any] | None = None) -> PopulationSummary:
        """The population summary of the people seen (``summary.json``'s contract, ``people`` set).

        Args:
            bands: age bands, or their ``--bands`` text (default: the audience brackets).
            interval: central probability of the intervals (default 0.9).
            context: extra keys for ``summary.json`` (the source, counts and re-id settings are added).

        Raises:
            InvalidValueError: bad bands or an interval outside (0, 1).
        """
        from ..population import AgeBands
        from ..population.records import calibration_of

        if bands is None or isinstance(bands, str):
            bands = AgeBands.parse(bands)
        people = self.people
        reid = {"on": self.reid is not None, "threshold": self.settings.reid_threshold,
                "frames": self.settings.reid_frames}
        # The plain per-person majority (what the end line counts) beside the estimator's shares.
        extra = {"source": self.info.name, "majority_gender": gender_counts(people), "tracks": len(self.tracks),
                 "glimpses": len(self.grouping.glimpses), "face_detections": self.faces_found,
                 "frames_analysed": self.frames_analysed, "reid": reid, **(context or {})}
        # The contract's "faces" counts faces (detections); "people" the people.
        return summarize(people, calibration_of(self.settings.analyzer.model.bundle), bands, interval=interval,
                         faces=self.faces_found, context=extra)

    def __enter__(self) -> VideoRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the open tracks and release the source (idempotent)."""
        if not self.finished:
            self.finished = True
            self.remaining = self.grouping.end(self.tracker.finish(), self.tracker.evidence)
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
        self.faces_found += len(step.faces)
        self.analysed_times.append(frame.time)
        if self.reid is not None:
            self.reid.observe(frame.image, frame.time, step.faces)
        ended = tuple(self.grouping.end(step.ended, self.tracker.evidence))
        return FrameResult(frame.index, frame.time, True, step.faces, step.tracks, ended, frame.image)
