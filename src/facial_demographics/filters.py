"""Which detected faces are counted: the ``--min-face`` and ``--min-score`` filters, in one place.

The CLI, the Python API (``FaceAnalyzer(min_face=..., min_score=...)``), the REST API and the page all
use :class:`FaceFilter`, so a face is kept or dropped by the same rule everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from .errors import InvalidValueError


class Boxed(Protocol):
    """What the filter reads of a face: a detection or an analysed face."""

    @property
    def box(self) -> tuple[float, float, float, float]: ...

    @property
    def score(self) -> float: ...


_B = TypeVar("_B", bound=Boxed)


def face_size(box: tuple[float, float, float, float] | list[float]) -> float:
    """A face's size in pixels: the shorter side of its box (a tilted or cut face is not oversized)."""
    x1, y1, x2, y2 = box
    return float(min(x2 - x1, y2 - y1))


@dataclass(frozen=True)
class FaceFilter:
    """Drop faces smaller than ``min_face`` pixels or detected with a score below ``min_score``.

    Both default to keeping every face the detector reports (it has its own score threshold, so a
    ``min_score`` below that threshold changes nothing).

    Raises:
        InvalidValueError: ``min_face`` is negative or ``min_score`` is outside 0..1.
    """

    min_face: float = 0.0
    min_score: float = 0.0

    def __post_init__(self) -> None:
        if self.min_face < 0:
            raise InvalidValueError(f"min_face must be 0 or more pixels, got {self.min_face}")
        if not 0.0 <= self.min_score <= 1.0:
            raise InvalidValueError(f"min_score must be between 0 and 1, got {self.min_score}")

    @property
    def active(self) -> bool:
        """True when the filter can drop a face."""
        return self.min_face > 0 or self.min_score > 0

    def keep(self, detection: Boxed) -> bool:
        """True when ``detection`` (a detection or an analysed face) is big enough and scored high enough
        to be counted."""
        return face_size(detection.box) >= self.min_face and detection.score >= self.min_score

    def apply(self, detections: list[_B]) -> list[_B]:
        """The detections that pass, in their order."""
        return [d for d in detections if self.keep(d)] if self.active else detections
