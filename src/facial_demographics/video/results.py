"""Typed results of video analysis: faces with track ids, per-track answers, one record per frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..labels import age_group
from ..types import Face


def _r(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


@dataclass(frozen=True)
class TrackedFace:
    """A face found in one analysed frame: this frame's own answer, and its track (None until confirmed)."""

    face: Face
    track_id: int | None

    def to_dict(self) -> dict[str, Any]:
        """The image schema of a face (``Face.to_dict``) plus ``track_id``."""
        return {**self.face.to_dict(), "track_id": self.track_id}


@dataclass(frozen=True)
class ReidMatch:
    """How an ended track was compared with the earlier tracks (``video.reid``), for ``tracks.jsonl``.

    ``nearest_track`` is the closest earlier track it could belong to (one that ended before it started,
    of a person not seen meanwhile) and ``distance`` the Euclidean distance between the two tracks' mean
    face descriptors; ``matched_track`` is that track when the distance is within the threshold (the
    track then joins its person), else None. ``described`` counts the frames its descriptor came from.
    """

    matched_track: int | None
    nearest_track: int | None
    distance: float | None
    described: int

    def to_dict(self) -> dict[str, Any]:
        return {"matched_track": self.matched_track, "nearest_track": self.nearest_track,
                "distance": None if self.distance is None else _r(self.distance, 4), "described": self.described}


@dataclass(frozen=True)
class TrackSummary:
    """One track's combined answer over the frames seen so far (final when the track has ended).

    ``frames`` counts the analysed frames in which the face was found; ``box`` is its latest box.
    ``person_id`` (the ``track_id`` of the person's first track) and ``reid`` are set once the track has
    ended and been compared with the earlier ones (``reid`` stays None when re-identification is off;
    both stay None for a glimpse, a track without one usable face, see ``video.people``).
    """

    track_id: int
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    frames: int
    box: tuple[float, float, float, float]
    age: float
    age_interval: tuple[float, float]
    gender: str | None
    gender_probability: float | None
    person_id: int | None = None
    reid: ReidMatch | None = None

    @property
    def age_group(self) -> str:
        return age_group(self.age)

    def to_dict(self) -> dict[str, Any]:
        """A ``tracks.jsonl`` line: plain JSON types only."""
        return {
            "track_id": self.track_id,
            "person_id": self.person_id,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "first_time": _r(self.first_time, 3),
            "last_time": _r(self.last_time, 3),
            "frames": self.frames,
            **self._answer(),
            "reid": None if self.reid is None else self.reid.to_dict(),
        }

    def _answer(self) -> dict[str, Any]:
        """The combined age and gender, as both summaries show them."""
        return {
            "age": _r(self.age),
            "age_interval": [_r(v) for v in self.age_interval],
            "age_group": self.age_group,
            "gender": self.gender,
            "gender_probability": None if self.gender_probability is None else _r(self.gender_probability, 4),
        }

    def answer_dict(self) -> dict[str, Any]:
        """The running answer as shown with a frame: id, latest box and the combined age and gender."""
        return {
            "track_id": self.track_id,
            "box": [_r(v) for v in self.box],
            "frames": self.frames,
            **self._answer(),
        }

    def as_face(self) -> Face:
        """A :class:`Face` carrying the track's answer at its latest box (for drawing)."""
        return Face(box=self.box, score=1.0, landmarks=[], age=self.age, age_interval=self.age_interval,
                    age_group=self.age_group, gender=self.gender, gender_probability=self.gender_probability)


@dataclass(frozen=True)
class FrameResult:
    """One decoded frame of the video.

    ``analysed`` frames carry the faces found in them; the frames in between (``every``, ``max_fps``)
    carry none, and their ``tracks`` are those of the last analysed frame, at their last boxes.
    ``ended`` lists the tracks that were lost for good at this frame, with their final answers.
    """

    frame: int
    time: float
    analysed: bool
    faces: tuple[TrackedFace, ...] = ()
    tracks: tuple[TrackSummary, ...] = ()
    ended: tuple[TrackSummary, ...] = ()
    image: np.ndarray | None = field(default=None, repr=False, compare=False)  # upright RGB

    def to_dict(self) -> dict[str, Any]:
        """A ``frames.jsonl`` line: frame, time, the faces (image schema plus ``track_id``) and the
        running answers of the tracks seen in this frame."""
        return {
            "frame": self.frame,
            "time": _r(self.time, 3),
            "faces": [f.to_dict() for f in self.faces],
            "tracks": [t.answer_dict() for t in self.tracks],
        }
