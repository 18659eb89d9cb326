"""Typed results shared by every stage: plain dataclasses, JSON-ready through ``to_dict``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Per-year probabilities below this are dropped from the ends of a written age distribution (it is
#: renormalised on reading); four decimals keep a typical face to a few dozen numbers.
_DIST_TAIL = 1e-4


def encode_distribution(probs: np.ndarray) -> dict[str, Any]:
    """A per-year age distribution (ages 0..len-1) as ``{"start": first_age, "p": [...]}``: the compact form
    ``analyze`` writes per face and ``summarize`` reads back (:func:`decode_distribution`)."""
    keep = np.flatnonzero(probs >= _DIST_TAIL)
    if len(keep) == 0:
        keep = np.array([int(np.argmax(probs))])
    lo, hi = int(keep[0]), int(keep[-1])
    return {"start": lo, "p": [round(float(v), 4) for v in probs[lo:hi + 1]]}


def decode_distribution(doc: Any, n_ages: int) -> np.ndarray:
    """The per-year distribution (length ``n_ages``, summing to 1) from :func:`encode_distribution`'s form.

    Raises:
        ValueError: not that form (a missing key, a negative or non-finite value, no mass, out of range).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("start"), int) or not isinstance(doc.get("p"), list):
        raise ValueError('age_distribution must be {"start": int, "p": [numbers]}')
    p = np.asarray(doc["p"], dtype=np.float64)
    start = doc["start"]
    if p.ndim != 1 or start < 0 or start + len(p) > n_ages or not np.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"age_distribution must hold non-negative numbers for ages 0..{n_ages - 1}")
    total = p.sum()
    if total <= 0:
        raise ValueError("age_distribution has no probability mass")
    out = np.zeros(n_ages)
    out[start:start + len(p)] = p / total
    return out


def p_female(gender: str | None, gender_probability: float | None) -> float | None:
    """P(female) from the predicted gender and its probability; None when either is missing."""
    if gender is None or gender_probability is None:
        return None
    return gender_probability if gender == "female" else 1.0 - gender_probability


@dataclass(frozen=True)
class Detection:
    """One detected face in original image coordinates.

    ``landmarks`` is a (5, 2) float array: right eye, left eye (as seen in the
    image: the one with the smaller x first), nose, right mouth corner, left mouth corner.
    """

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class AlignedFace:
    """A face warped onto the canonical template, ready for the model."""

    image: np.ndarray  # (size, size, 3) uint8 RGB
    detection: Detection
    matrix: np.ndarray  # 2x3 affine from the source image to the aligned crop
    fallback: bool = False  # True when no face was found and the whole image was used


@dataclass(frozen=True)
class Face:
    """One analysed face: where it is and what the model says about it.

    ``box`` is (x1, y1, x2, y2) in pixels of the image as read (EXIF rotation applied): left, top,
    right, bottom. ``landmarks`` are five (x, y) points in the same pixels. ``age_interval`` is the
    central 80 % interval of the predicted age distribution. ``gender_probability`` is the
    probability of the predicted ``gender`` (so always ≥ 0.5); P(female) is
    ``gender_probability`` when ``gender == "female"``, else ``1 - gender_probability``.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: list[tuple[float, float]]
    age: float
    age_interval: tuple[float, float]
    age_group: str
    gender: str | None  # None when the model has no gender head
    gender_probability: float | None
    fallback: bool = False
    #: The calibrated age distribution over whole years 0..100 (what population summaries read); None for
    #: a regression age head, which has no distribution.
    age_probs: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def p_female(self) -> float | None:
        """P(female), whichever gender was predicted; None without a gender head."""
        return p_female(self.gender, self.gender_probability)

    def __repr__(self) -> str:
        low, high = self.age_interval
        gender = "" if self.gender is None else f", {self.gender} {self.gender_probability:.2f}"
        box = ", ".join(f"{v:.0f}" for v in self.box)
        return f"Face(age {self.age:.1f} ({low:.0f}–{high:.0f}){gender}, box=({box}))"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (lists, floats, str, None), so ``json.dumps(face.to_dict())`` works."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "age": round(float(self.age), 2),
            "age_interval": [round(float(v), 2) for v in self.age_interval],
            "age_group": self.age_group,
            "gender": self.gender,
            "gender_probability": None if self.gender_probability is None
            else round(float(self.gender_probability), 4),
            **({} if self.age_probs is None else {"age_distribution": encode_distribution(self.age_probs)}),
        }


@dataclass
class ImageResult:
    """Everything found in one input image; ``error`` is set (and ``faces`` empty) when it failed."""

    path: str | None
    width: int | None = None
    height: int | None = None
    faces: list[Face] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        if self.error is not None:
            return f"ImageResult({self.path!r}, error={self.error!r})"
        n = len(self.faces)
        return f"ImageResult({self.path!r}, {self.width}x{self.height}, {n} face{'' if n == 1 else 's'})"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only, so ``json.dumps(result.to_dict())`` works; the ``analyze --format json`` record."""
        return {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "faces": [f.to_dict() for f in self.faces],
            "error": self.error,
        }

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as a JSON string (UTF-8 text, non-ASCII kept), e.g. one line of JSON Lines.

        Args:
            indent: pretty-print with this indent; None gives one line.

        Returns:
            The JSON text.
        """
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)
