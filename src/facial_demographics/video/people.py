"""People, not faces: ended tracks grouped into people, one answer per person, and a population summary.

When a track ends, :class:`People` compares it with the tracks that ended before it started
(``video.reid``): it joins the person of the nearest one if their mean face descriptors are within
``REID_THRESHOLD`` and that person was not in view meanwhile (one person cannot be in two places at
once), else it starts a new person. A person's ``person_id`` is the ``track_id`` of its first track.

A track is a *glimpse*, not a person (its ``person_id`` stays None), when its usable frames, those
whose fusion weight (detection score × size × frontal shape) reaches ``USABLE_WEIGHT``, span less than
``MIN_PERSON_S``. On the generated videos these are the detector's false positives on the background
photo, tracked for a few frames: an 18 px "face" at score 0.6 (weight 0.15, never usable) or the handle
of a coffee cup, 115 px at score 0.6-0.7, for 0.2 s. A real face never usable for a second (always
tiny, turned away or half hidden), or seen for less than a second, is too little evidence to count.

A person's answer fuses the evidence of all its tracks (:meth:`.fusion.TrackEvidence.combine`): the
weighted mean per-year age distribution (from the temperature-scaled interval distributions, as
``Face.age_probs``) and the weighted mean gender log-odds. The population summary (:func:`summarize`)
reads one row per person. A person's ``gender`` is the plain majority of that evidence (P(female) ≥ 0.5);
the end line of ``video`` counts people by it, while ``summary.json`` gives the estimator's shares and
counts (which spread an uncertain person over both genders).

Memory: ``video`` keeps every ended track for matching (a run is finite). A live session runs without
end, so it passes ``max_people`` (``LIVE_REID_PEOPLE``): the tracks of at most that many people, those
whose last track ended most recently, are kept for matching (each a 128-d descriptor and its evidence
sums, a few kB); the person whose last track ended longest ago is forgotten, and if they come back they
are a new person. Glimpses are then kept for at most the same number of tracks.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..labels import MAX_AGE, age_group
from .fusion import TrackEvidence
from .reid import REID_THRESHOLD, Reidentifier
from .results import ReidMatch, TrackSummary

if TYPE_CHECKING:
    from ..population import AgeBands, PopulationSummary

#: Least time between a track's first and last usable frame for it to count as a person.
MIN_PERSON_S = 1.0
#: People a live session keeps for matching returning faces (``People(max_people=...)``, see above).
LIVE_REID_PEOPLE = 500


def is_glimpse(evidence: TrackEvidence) -> bool:
    """True when a track is a glimpse, nobody (see the module text): its usable frames span less than
    ``MIN_PERSON_S``. ``video``, ``People`` and the live tally all decide by this."""
    usable = evidence.usable
    return usable is None or usable[1] - usable[0] < MIN_PERSON_S


@dataclass(frozen=True)
class PersonSummary:
    """One person: their tracks, when they were in view, and the answer fused over all their frames.

    ``seconds`` is the time in view: the sum of the tracks' spans from first to last sighting (a gap
    inside a track, shorter than ``lost_after``, counts as in view; the time between tracks does not).
    ``age_probs`` is the per-year (101,) distribution the population summary reads.
    """

    person_id: int
    tracks: tuple[int, ...]
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    seconds: float
    frames: int
    age: float
    age_interval: tuple[float, float]
    gender: str | None
    gender_probability: float | None
    p_female: float | None
    age_probs: np.ndarray = field(repr=False, compare=False)

    @property
    def age_group(self) -> str:
        return age_group(self.age)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (without the distribution)."""
        return {
            "person_id": self.person_id, "tracks": list(self.tracks),
            "first_frame": self.first_frame, "last_frame": self.last_frame,
            "first_time": round(self.first_time, 3), "last_time": round(self.last_time, 3),
            "seconds": round(self.seconds, 3), "frames": self.frames, "age": round(self.age, 2),
            "age_interval": [round(v, 2) for v in self.age_interval], "age_group": self.age_group,
            "gender": self.gender,
            "gender_probability": None if self.gender_probability is None else round(self.gender_probability, 4),
        }


@dataclass
class _Track:
    """An ended track as the grouping keeps it."""

    summary: TrackSummary
    evidence: TrackEvidence
    descriptor: np.ndarray | None


class People:
    """Groups ended tracks into people.

    Args:
        reid: describes tracks (None: re-identification is off and every track is its own person).
        threshold: largest descriptor distance at which two tracks are one person.
        max_people: keep the tracks of at most this many people for matching, forgetting the one whose
            last track ended longest ago (None: all, as ``video`` does; see the module text).
    """

    def __init__(self, reid: Reidentifier | None, threshold: float = REID_THRESHOLD,
                 max_people: int | None = None) -> None:
        if not threshold >= 0:
            raise ValueError(f"threshold must be at least 0, got {threshold}")
        if max_people is not None and max_people < 1:
            raise ValueError(f"max_people must be at least 1, got {max_people}")
        self.reid = reid
        self.threshold = threshold
        self.max_people = max_people
        self._tracks: dict[int, _Track] = {}
        self._person: dict[int, int] = {}  # track id -> person id
        self._recent: OrderedDict[int, None] = OrderedDict()  # person ids, the last to end a track last
        self.forgotten = 0  # people forgotten for ``max_people``
        self.glimpses: dict[int, TrackSummary] = {}  # ended tracks that are nobody's

    def end(self, tracks: Sequence[TrackSummary], evidence: Callable[[int], TrackEvidence]) -> list[TrackSummary]:
        """Assign each ended track to a person (earliest start first, so a later track can join an earlier
        one that ended at the same time).

        Args:
            tracks: final answers of tracks that have just ended.
            evidence: each track's evidence, by track id.

        Returns:
            The same tracks, in the given order, with ``person_id`` and ``reid`` set.
        """
        done = {t.track_id: self._end(t, evidence(t.track_id))
                for t in sorted(tracks, key=lambda t: (t.first_time, t.track_id))}
        return [done[t.track_id] for t in tracks]

    def _end(self, track: TrackSummary, evidence: TrackEvidence) -> TrackSummary:
        descriptor, described = self.reid.describe(track.track_id) if self.reid is not None else (None, 0)
        if is_glimpse(evidence):
            self.glimpses[track.track_id] = track
            while self.max_people is not None and len(self.glimpses) > self.max_people:
                del self.glimpses[next(iter(self.glimpses))]
            return track
        match = None
        person = track.track_id
        if self.reid is not None:
            nearest, distance = self._nearest(track, descriptor)
            matched = nearest if distance is not None and distance <= self.threshold else None
            if matched is not None:
                person = self._person[matched]
            match = ReidMatch(matched, nearest, distance, described)
        final = replace(track, person_id=person, reid=match)
        self._tracks[track.track_id] = _Track(final, evidence, descriptor)
        self._person[track.track_id] = person
        self._recent.pop(person, None)
        self._recent[person] = None
        if self.max_people is not None and len(self._recent) > self.max_people:
            self._forget(next(iter(self._recent)))
        return final

    def _forget(self, person: int) -> None:
        """Drop every track of ``person`` (the one whose last track ended longest ago)."""
        del self._recent[person]
        for k in [k for k, p in self._person.items() if p == person]:
            del self._tracks[k], self._person[k]
        self.forgotten += 1

    def _nearest(self, track: TrackSummary, descriptor: np.ndarray | None) -> tuple[int | None, float | None]:
        """The closest earlier track whose person was out of view for the whole of ``track``."""
        if descriptor is None:
            return None, None
        busy = {self._person[k] for k, t in self._tracks.items()
                if t.summary.first_time <= track.last_time and t.summary.last_time >= track.first_time}
        best: tuple[int | None, float | None] = (None, None)
        for k, t in self._tracks.items():
            if t.descriptor is None or self._person[k] in busy or t.summary.last_time >= track.first_time:
                continue
            distance = float(np.linalg.norm(t.descriptor - descriptor))
            if best[1] is None or distance < best[1]:
                best = (k, distance)
        return best

    def annotate(self, track: TrackSummary) -> TrackSummary:
        """``track`` with its person, when it has ended and been assigned (else unchanged)."""
        kept = self._tracks.get(track.track_id)
        return kept.summary if kept is not None else self.glimpses.get(track.track_id, track)

    def people(self) -> list[PersonSummary]:
        """Every person so far (from ended tracks only), in order of first appearance."""
        groups: dict[int, list[_Track]] = {}
        for k, t in self._tracks.items():
            groups.setdefault(self._person[k], []).append(t)
        out = [_person(pid, sorted(ts, key=lambda t: t.summary.first_time)) for pid, ts in groups.items()]
        return sorted(out, key=lambda p: (p.first_time, p.person_id))


def _person(person_id: int, tracks: list[_Track]) -> PersonSummary:
    evidence = TrackEvidence.combine([t.evidence for t in tracks])
    answer = evidence.answer()
    years = evidence.year_distribution()
    if years is None:  # a regression head has no distribution: its point age stands for it
        years = np.zeros(MAX_AGE + 1)
        years[int(np.clip(round(answer.age), 0, MAX_AGE))] = 1.0
    pf = answer.p_female
    gender = None if pf is None else ("female" if pf >= 0.5 else "male")
    probability = None if pf is None else (pf if pf >= 0.5 else 1.0 - pf)
    summaries = [t.summary for t in tracks]
    return PersonSummary(
        person_id, tuple(s.track_id for s in summaries), summaries[0].first_frame,
        max(s.last_frame for s in summaries), summaries[0].first_time, max(s.last_time for s in summaries),
        sum(s.last_time - s.first_time for s in summaries), sum(s.frames for s in summaries),
        answer.age, answer.age_interval, gender, probability, pf, years)


def gender_counts(people: Sequence[PersonSummary]) -> dict[str, int]:
    """People per majority gender (``male``, ``female``; ``unknown`` without a gender head), nonzero only."""
    counts = {"male": 0, "female": 0, "unknown": 0}
    for p in people:
        counts[p.gender or "unknown"] += 1
    return {k: v for k, v in counts.items() if v}


def describe_people(people: Sequence[PersonSummary]) -> str:
    """``3 people: 2 male, 1 female``, ``1 person: 1 female``, ``0 people``."""
    n = len(people)
    text = f"{n} {'person' if n == 1 else 'people'}"
    split = ", ".join(f"{v} {k}" for k, v in gender_counts(people).items())
    return f"{text}: {split}" if split else text


@dataclass(frozen=True)
class PeopleOverTime:
    """At each analysed frame's time: people in view (within one of their tracks' spans) and people seen
    so far."""

    times: np.ndarray
    visible: np.ndarray
    cumulative: np.ndarray

    def csv(self) -> str:
        rows = ["time,people_visible,people_cumulative"]
        rows += [f"{t:.3f},{v},{c}" for t, v, c in zip(self.times, self.visible, self.cumulative, strict=True)]
        return "\n".join(rows) + "\n"


def people_over_time(people: Sequence[PersonSummary], tracks: Sequence[TrackSummary],
                     times: Sequence[float]) -> PeopleOverTime:
    """The series for ``times`` (the analysed frames), from the people's tracks' first and last sightings.

    Args:
        people: the people of the run.
        tracks: the ended tracks (those without ``person_id``, glimpses, are left out).
        times: the analysed frames' times, increasing.
    """
    t = np.asarray(times, dtype=np.float64)
    visible = np.zeros(len(t), dtype=np.int64)
    by_person: dict[int, list[TrackSummary]] = {}
    for track in tracks:
        if track.person_id is not None:  # glimpses are nobody
            by_person.setdefault(track.person_id, []).append(track)
    for own in by_person.values():
        inside = np.zeros(len(t), dtype=bool)
        for track in own:
            inside |= (t >= track.first_time - 1e-6) & (t <= track.last_time + 1e-6)
        visible += inside
    firsts = np.sort([p.first_time for p in people])
    cumulative = np.searchsorted(firsts, t + 1e-6, side="right").astype(np.int64)
    return PeopleOverTime(t, visible, cumulative)


def summarize(people: Sequence[PersonSummary], calibration: Any = None, bands: AgeBands | None = None, *,
              interval: float | None = None, faces: int | None = None,
              context: dict[str, Any] | None = None) -> PopulationSummary:
    """The population summary with one row per person (``people`` set in ``summary.json``).

    Args:
        people: the people of a run.
        calibration: the bundle's ``PopulationCalibration`` (None: the estimator falls back to ``sum``).
        bands: age bands (default: the audience brackets).
        interval: central probability of the intervals (default: the estimator's).
        faces: the face detections behind the people (``summary.json``'s ``faces``; default: one per person).
        context: extra keys for ``summary.json``.

    Raises:
        InvalidValueError: an interval outside (0, 1).
    """
    from ..population import DEFAULT_INTERVAL, Evidence, estimate

    probs = np.stack([p.age_probs for p in people]) if people else np.zeros((0, MAX_AGE + 1))
    p_female = np.array([math.nan if p.p_female is None else p.p_female for p in people], dtype=np.float64)
    return estimate(Evidence(probs, p_female), bands, calibration=calibration,
                    interval=DEFAULT_INTERVAL if interval is None else interval, people=len(people),
                    faces=faces, context=context)
