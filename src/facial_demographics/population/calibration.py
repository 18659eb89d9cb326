"""What a population estimate needs to know about the model, measured once on validation faces.

Stored in the bundle's manifest under ``population`` (like the gender calibration under its head) at
one-year resolution, so any band edges can be chosen later without re-measuring:

- ``counts``: validation faces per (true gender, true age year), shape (2, 101);
- ``mean_posterior``: the mean joint posterior P(gender, age year | face) over those faces, (2, 101): the
  prior the model's outputs effectively carry, which the EM prior adjustment divides out;
- ``confusion``: for the faces of each true age year, their mean age distribution, (101, 101) with rows
  summing to 1 (an all-zero row where no face had that age);
- ``p_female``: mean P(female) per (true gender, true age year), (2, 101);
- ``shift_test``: the threshold of the estimator's test for a shifted age mix, ``max(floor, per_face * n)``
  for n faces: twice the largest statistic seen on validation populations of UTKFace's own mix;
- ``systematic``: the model's own error in a share that resampling cannot see (a bias that shifts with
  the age mix), as a multiple of sqrt(share * (1 - share)), for age bands (and cells) when the age mix
  was adjusted, for gender, and for age bands when it was not;
  measured by ``benchmarks/population.py`` on cross-fitted validation populations of shifted age mixes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError
from ..labels import FEMALE, MALE, MAX_AGE

N_AGES = MAX_AGE + 1


class CalibrationError(UserError, ValueError):
    """A ``population`` manifest section that is malformed."""


def _matrix(doc: Mapping[str, Any], key: str, shape: tuple[int, int]) -> np.ndarray:
    try:
        arr = np.asarray(doc[key], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise CalibrationError(f"manifest: population.{key} is missing or not a numeric matrix") from None
    if arr.shape != shape or not np.isfinite(arr).all():
        raise CalibrationError(f"manifest: population.{key} must be a finite {shape[0]}x{shape[1]} matrix")
    return arr


def _rounded(arr: np.ndarray, digits: int = 5) -> list[list[float]]:
    return [[0 if v == 0 else round(float(v), digits) for v in row] for row in arr]


@dataclass(frozen=True, eq=False)
class PopulationCalibration:
    """The model's behaviour on labelled validation faces (see the module text for each array)."""

    counts: np.ndarray
    mean_posterior: np.ndarray
    confusion: np.ndarray
    p_female: np.ndarray
    source: str = ""
    systematic: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (age when adjusted, gender, age when not)
    shift_test: tuple[float, float] = (0.0, 0.0)  # (floor, per-face rate) of the shift test's threshold

    def shift_threshold(self, faces: int) -> float:
        """The log-likelihood-ratio statistic above which ``faces`` faces show a shifted age mix."""
        return max(self.shift_test[0], self.shift_test[1] * faces)

    @property
    def faces(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def fit(cls, age_probs: np.ndarray, p_female: np.ndarray, ages: np.ndarray, genders: np.ndarray,
            source: str = "") -> PopulationCalibration:
        """Measure the calibration from predictions on labelled faces.

        Args:
            age_probs: (N, 101) per-year age distributions (rows sum to 1).
            p_female: (N,) calibrated P(female).
            ages: (N,) true ages in years (clipped to 0..100).
            genders: (N,) true gender codes (0 male, 1 female).
            source: where the faces came from, for the manifest.

        Returns:
            The calibration.
        """
        years = np.clip(np.rint(ages), 0, MAX_AGE).astype(int)
        genders = np.asarray(genders, dtype=int)
        counts = np.zeros((2, N_AGES))
        np.add.at(counts, (genders, years), 1.0)
        joint = np.stack([age_probs * (1 - p_female)[:, None], age_probs * p_female[:, None]], axis=1)
        confusion = np.zeros((N_AGES, N_AGES))
        np.add.at(confusion, years, age_probs)
        per_year = counts.sum(axis=0)
        confusion = np.divide(confusion, per_year[:, None], out=np.zeros_like(confusion),
                              where=per_year[:, None] > 0)
        pf = np.zeros((2, N_AGES))
        np.add.at(pf, (genders, years), p_female)
        pf = np.divide(pf, counts, out=np.zeros_like(pf), where=counts > 0)
        return cls(counts, joint.mean(axis=0), confusion, pf, source)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``population`` section."""
        return {"source": self.source, "faces": self.faces, "ages": [0, MAX_AGE],
                "genders": ["male", "female"],
                "counts": [[int(v) for v in row] for row in self.counts],
                "mean_posterior": _rounded(self.mean_posterior, 7),
                "confusion": _rounded(self.confusion),
                "p_female": _rounded(self.p_female, 4),
                "systematic": {"age": round(self.systematic[0], 4), "gender": round(self.systematic[1], 4),
                               "age_unshifted": round(self.systematic[2], 4)},
                "shift_test": {"floor": round(self.shift_test[0], 2), "per_face": round(self.shift_test[1], 4)}}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PopulationCalibration:
        """Parse the manifest's ``population`` section.

        Raises:
            CalibrationError: a missing key or a matrix of the wrong shape.
        """
        counts = _matrix(doc, "counts", (2, N_AGES))
        sys_doc = doc.get("systematic") or {}
        try:
            systematic = (float(sys_doc.get("age", 0.0)), float(sys_doc.get("gender", 0.0)),
                          float(sys_doc.get("age_unshifted", sys_doc.get("age", 0.0))))
        except (AttributeError, TypeError, ValueError):
            raise CalibrationError("manifest: population.systematic must be {\"age\": number, \"gender\": number}"
                                   ) from None
        if not all(np.isfinite(v) for v in systematic) or min(systematic) < 0:
            raise CalibrationError("manifest: population.systematic values must be finite and non-negative")
        test_doc = doc.get("shift_test") or {}
        try:
            shift = (float(test_doc.get("floor", 0.0)), float(test_doc.get("per_face", 0.0)))
        except (AttributeError, TypeError, ValueError):
            raise CalibrationError("manifest: population.shift_test must be {\"floor\": number, \"per_face\": "
                                   "number}") from None
        return cls(counts, _matrix(doc, "mean_posterior", (2, N_AGES)), _matrix(doc, "confusion", (N_AGES, N_AGES)),
                   _matrix(doc, "p_female", (2, N_AGES)), str(doc.get("source", "")), systematic, shift)

    def with_systematic(self, age: float, gender: float, age_unshifted: float | None = None) -> PopulationCalibration:
        unshifted = age if age_unshifted is None else age_unshifted
        return dataclasses.replace(self, systematic=(float(age), float(gender), float(unshifted)))

    def with_shift_test(self, floor: float, per_face: float) -> PopulationCalibration:
        return dataclasses.replace(self, shift_test=(float(floor), float(per_face)))

    def widen(self, pi: np.ndarray, cells: list[np.ndarray], ages: list[np.ndarray], genders: list[np.ndarray],
              rng: np.random.Generator, adjusted: bool = True,
              ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Add the systematic error to each bootstrap draw (cells, age bands, genders), so the intervals
        hold the model's bias as well as sampling and per-face uncertainty; ``adjusted``: whether the age
        mix was adjusted (the two cases err differently)."""
        c_age = self.systematic[0] if adjusted else self.systematic[2]
        c_gender = self.systematic[1]

        def jitter(draws: list[np.ndarray], point: np.ndarray, c: float) -> list[np.ndarray]:
            sd = c * np.sqrt(np.clip(point * (1 - point), 0, None))
            return [np.clip(d + rng.standard_normal(d.shape) * sd, 0, 1) for d in draws]

        return (jitter(cells, pi, c_age), jitter(ages, pi.sum(axis=0), c_age),
                jitter(genders, pi.sum(axis=1), c_gender))

    # -- band views -------------------------------------------------------------------------------
    def prior(self, band_matrix: np.ndarray) -> np.ndarray:
        """The model's effective joint prior over (gender, band), flattened gender-major, (2 * B,)."""
        prior = (self.mean_posterior @ band_matrix).ravel()
        return prior / prior.sum()

    def band_confusion(self, band_matrix: np.ndarray) -> np.ndarray:
        """(B, B) matrix M with M[j, k] = mean P(band j) over faces whose true age is in band k."""
        per_year = self.counts.sum(axis=0)
        weight = band_matrix * per_year[:, None]  # (101, B): validation faces of each year in each band
        totals = weight.sum(axis=0)
        pred = self.confusion @ band_matrix  # (101, B): mean band distribution for each true year
        m = np.divide(pred.T @ weight, totals[None, :], out=np.eye(band_matrix.shape[1]),
                      where=totals[None, :] > 0)
        return m

    def gender_rates(self, band_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean P(female) of true men and of true women in each band, two (B,) arrays (0 and 1 where a band
        had no faces of that gender, i.e. no correction)."""
        num = (self.p_female * self.counts) @ band_matrix
        den = self.counts @ band_matrix
        rates = np.divide(num, den, out=np.array([np.zeros(den.shape[1]), np.ones(den.shape[1])]), where=den > 0)
        return rates[MALE], rates[FEMALE]
