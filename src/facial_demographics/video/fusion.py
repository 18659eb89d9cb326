"""Per-track evidence over time: one stable age and gender from many noisy frames.

Each analysed frame adds its face's age distribution and gender log-odds with a weight for how much
that frame can be trusted (:func:`quality`). The track's answer is the weighted mean distribution
(its expected age and central interval, as for one face) and the weighted mean log-odds. The mean, not
the sum, of the log-odds: consecutive frames of one face are nearly the same picture, so summing
them as independent evidence would make the probability absurdly confident after a second of video.
Only running sums are kept, so a track's memory does not grow with its length, and a person seen in
several tracks (``video.people``) is answered from the sums of all of them (:meth:`TrackEvidence.combine`):
the same weighted means over every frame the person was seen in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..model import AgeGenderModel
from ..types import Face

#: P(female) is clipped to this distance from 0 and 1 before taking log-odds.
_P_EPS = 1e-4


@dataclass(frozen=True)
class Observation:
    """One face in one analysed frame, with what the model said about it."""

    face: Face
    p_female: float  # NaN without a gender head
    age_probs: np.ndarray | None  # (K,) over the age head's bins; None for a regression head
    age_interval_probs: np.ndarray | None


@dataclass(frozen=True)
class Answer:
    """A track's combined answer so far."""

    age: float
    age_interval: tuple[float, float]
    p_female: float | None  # None without a gender head
    weight: float  # the total evidence weight behind it


#: A frame weighing less than this (mostly hidden, turned away, tiny, or a doubtful detection) is not
#: *usable*: it is never described for re-identification and does not make a track count as a person.
USABLE_WEIGHT = 0.2

#: Width over height of the detector's box on an upright frontal face (0.76–0.81 on the generated
#: videos' UTKFace faces); narrower boxes are faces cut by something in front, the border, or profiles.
FRONTAL_ASPECT = 0.75


def quality(face: Face, model_size: int) -> float:
    """How much one frame's answer counts: detection score × size factor × shape factor.

    A face smaller than the model's input has been enlarged for it and carries less detail, so its
    weight falls with its side (a quarter of the input size or less counts a quarter). A box narrower
    than a frontal face's is a face partly hidden (the detector boxes only what it sees) or turned away,
    whose answers are unreliable: its weight falls with the square of the ratio. Blurred faces get lower
    detection scores and so count less too.

    Args:
        face: the detected face.
        model_size: the model's input side in pixels.

    Returns:
        A weight in (0, 1].
    """
    width, height = max(face.box[2] - face.box[0], 1.0), max(face.box[3] - face.box[1], 1.0)
    size = min(1.0, max(0.25, math.sqrt(width * height) / model_size))
    shape = min(1.0, width / height / FRONTAL_ASPECT) ** 2
    return float(max(face.score, 1e-3) * size * max(shape, 0.05))


class TrackEvidence:
    """Running weighted sums for one track; :meth:`answer` combines them."""

    def __init__(self, model: AgeGenderModel) -> None:
        self.model = model
        self.weight = 0.0
        self.best = 0.0  # the largest single frame's weight
        #: (first, last) time of the usable frames (None: none yet, or added without times)
        self.usable: tuple[float, float] | None = None
        self.frames = 0
        self._probs: np.ndarray | None = None
        self._interval_probs: np.ndarray | None = None
        self._ages = np.zeros(3)  # weighted sums of age, low, high (regression heads only)
        self._log_odds = 0.0
        self._gender_weight = 0.0

    def add(self, obs: Observation, weight: float, time: float | None = None) -> None:
        """Add one frame's observation with ``weight`` (see :func:`quality`) seen at ``time`` seconds; frames
        weighing at least ``USABLE_WEIGHT`` extend :attr:`usable`."""
        self.frames += 1
        self.weight += weight
        self.best = max(self.best, weight)
        if time is not None and weight >= USABLE_WEIGHT:
            self.usable = (min(self.usable[0], time), max(self.usable[1], time)) if self.usable else (time, time)
        if obs.age_probs is not None and obs.age_interval_probs is not None:
            if self._probs is None or self._interval_probs is None:
                self._probs = np.zeros_like(obs.age_probs, dtype=np.float64)
                self._interval_probs = np.zeros_like(obs.age_interval_probs, dtype=np.float64)
            self._probs += weight * obs.age_probs
            self._interval_probs += weight * obs.age_interval_probs
        else:
            self._ages += weight * np.array([obs.face.age, *obs.face.age_interval])
        if not math.isnan(obs.p_female):
            p = min(max(obs.p_female, _P_EPS), 1.0 - _P_EPS)
            self._log_odds += weight * math.log(p / (1.0 - p))
            self._gender_weight += weight

    @classmethod
    def combine(cls, parts: list[TrackEvidence]) -> TrackEvidence:
        """One evidence holding every frame of ``parts`` (the tracks of one person), as if they had been
        added to it directly.

        Raises:
            ValueError: ``parts`` is empty.
        """
        if not parts:
            raise ValueError("nothing to combine")
        out = cls(parts[0].model)
        for part in parts:
            out.frames += part.frames
            out.weight += part.weight
            out.best = max(out.best, part.best)
            if part.usable is not None:
                out.usable = part.usable if out.usable is None else (min(out.usable[0], part.usable[0]),
                                                                     max(out.usable[1], part.usable[1]))
            out._ages += part._ages
            out._log_odds += part._log_odds
            out._gender_weight += part._gender_weight
            if part._probs is not None and part._interval_probs is not None:
                if out._probs is None or out._interval_probs is None:
                    out._probs, out._interval_probs = np.zeros_like(part._probs), np.zeros_like(part._interval_probs)
                out._probs += part._probs
                out._interval_probs += part._interval_probs
        return out

    def year_distribution(self) -> np.ndarray | None:
        """The weighted mean interval (temperature-scaled) distribution as a per-year (101,) distribution,
        the form population summaries read (as ``Face.age_probs``); None for a regression head or no evidence."""
        if self._interval_probs is None or self.weight <= 0:
            return None
        mean = self._interval_probs / self.weight
        return np.asarray(self.model.bundle.spec.age.year_distribution(mean[None])[0], dtype=np.float64)

    def answer(self) -> Answer:
        """The weighted mean age distribution's age and interval, and the mean log-odds' P(female).

        Raises:
            ValueError: nothing was added yet.
        """
        if self.weight <= 0:
            raise ValueError("a track without observations has no answer")
        if self._probs is not None and self._interval_probs is not None:
            age, low, high = self.model.age_from_distribution((self._probs / self.weight)[None],
                                                              (self._interval_probs / self.weight)[None])
            values = (float(age[0]), float(low[0]), float(high[0]))
        else:
            a, lo, hi = self._ages / self.weight
            values = (float(a), float(lo), float(hi))
        p_female = None
        if self._gender_weight > 0:
            p_female = 1.0 / (1.0 + math.exp(-self._log_odds / self._gender_weight))
        return Answer(values[0], (values[1], values[2]), p_female, self.weight)
