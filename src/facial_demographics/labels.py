"""The label vocabulary: gender codes, the five 25-year age buckets and the six age bands.

Every stage uses these definitions: dataset readers (codes), splits and statistics (bands), training
(buckets, codes), evaluation (buckets, bands, gender names) and the pipeline (``Face.age_group``). They
live at package level, not in ``datasets/``, because inference needs them too and must not import the
dataset tooling; they depend on numpy only.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from torch import Tensor

#: Gender codes used everywhere in this project (UTKFace's convention), and their names.
MALE, FEMALE = 0, 1
GENDER_LABELS: tuple[str, str] = ("male", "female")

#: The seed report's five 25-year age buckets (age // 25, the last open-ended).
AGE_GROUPS: tuple[str, ...] = ("0-24", "25-49", "50-74", "75-99", "100+")
AGE_GROUP_YEARS = 25
#: Bucket edges a "buckets" age head writes into its manifest; 120 closes the open last bucket.
AGE_BUCKET_EDGES: tuple[float, ...] = (0.0, 25.0, 50.0, 75.0, 100.0, 120.0)
#: Representative age of each bucket: the point estimate of a "buckets" age head.
AGE_BUCKET_AGES: tuple[float, ...] = (12.0, 37.0, 62.0, 87.0, 105.0)

#: Coarse life-stage bands: split strata, dataset statistics and the per-band evaluation breakdown.
AGE_BANDS: tuple[str, ...] = ("0-12", "13-19", "20-39", "40-59", "60-79", "80+")
#: First age of each band after the first.
AGE_BAND_EDGES: tuple[int, ...] = (13, 20, 40, 60, 80)

#: Finer bands for gender accuracy and calibration: gender cues change fastest in early childhood, where
#: a 0-12 band would average 2-year-olds (near chance) with 11-year-olds (nearly adult accuracy).
GENDER_AGE_BANDS: tuple[str, ...] = ("0-5", "6-12", "13-19", "20-39", "40-59", "60+")
GENDER_AGE_BAND_EDGES: tuple[int, ...] = (6, 13, 20, 40, 60)
#: Predicted-age bands with their own age-interval temperature (issue 33): ten-year steps through the
#: adult years, where over-confidence grows with age, and wide bands where faces are few.
INTERVAL_BAND_EDGES: tuple[int, ...] = (13, 20, 30, 40, 50, 60, 80)
#: Population summaries (``facial_demographics.population``): the audience-measurement brackets are the
#: default, the seed report's 25-year buckets a named preset. Each tuple is the first age of every band
#: after the first; the last band is open ("65+"). ``Face.age_group`` keeps the report's buckets: it names
#: one face's point estimate, while a summary spreads each face's whole age distribution over its bands.
AUDIENCE_BAND_EDGES: tuple[int, ...] = (13, 18, 25, 35, 45, 55, 65)
BAND_PRESETS: dict[str, tuple[int, ...]] = {
    "audience": AUDIENCE_BAND_EDGES,
    "report": (25, 50, 75, 100),
    "life-stage": AGE_BAND_EDGES,
}
#: The oldest age a summary resolves: the age heads' distributions end at 100 (ages above count as 100).
MAX_AGE = 100

#: First age counted as adult in the gender summary (the adult gender target is stated from here).
ADULT_AGE = 20

Ages = TypeVar("Ages", np.ndarray, "Tensor")


def age_bucket(ages: Ages) -> Ages:
    """The 25-year bucket rule on a numpy array or a torch tensor, in the input's float dtype.

    Args:
        ages: ages in years (any shape); NaN for unknown.

    Returns:
        ``floor(age / 25)`` clipped to 0..4, same type, dtype and device (NaN stays NaN); callers cast.
    """
    # One function for both array types keeps the rule in one place: the training loss buckets tensors
    # (on any device), everything else numpy arrays. floor(a / 25) equals a // 25 for every finite float
    # (the quotient cannot round up to the next integer), and unlike ``//`` it keeps +-inf at the ends.
    quotient = ages / AGE_GROUP_YEARS
    floor = np.floor(quotient) if isinstance(quotient, np.ndarray) else quotient.floor()
    return floor.clip(0, len(AGE_GROUPS) - 1)


def age_buckets(ages: ArrayLike) -> np.ndarray:
    """Bucket index of each age (an index into :data:`AGE_GROUPS`).

    Args:
        ages: ages in years; NaN for unknown.

    Returns:
        int64 array of the same length, -1 where the age is unknown.
    """
    buckets = age_bucket(np.asarray(ages, dtype=np.float64))
    return np.where(np.isnan(buckets), -1, buckets).astype(np.int64)


def age_group(age: float) -> str:
    """The :data:`AGE_GROUPS` name of one age.

    Raises:
        ValueError: the age is NaN (an unknown age has no group).
    """
    if math.isnan(age):
        raise ValueError("an unknown (NaN) age has no age group")
    return AGE_GROUPS[int(age_buckets([age])[0])]


def age_band_indices(ages: ArrayLike) -> np.ndarray:
    """Index into :data:`AGE_BANDS` of each age, int64 (negative ages in the first band, 80 and up in the
    last); callers mask unknown (NaN) ages themselves, which land in the last band here."""
    return np.searchsorted(np.asarray(AGE_BAND_EDGES), np.asarray(ages, dtype=np.float64), side="right")


def age_band(age: float) -> str:
    """The :data:`AGE_BANDS` name of one age (negative ages fall in the first band, 80 and up in the last)."""
    return AGE_BANDS[bisect.bisect_right(AGE_BAND_EDGES, age)]


def gender_age_band(age: float) -> str:
    """The :data:`GENDER_AGE_BANDS` name of one age (negative ages in the first band, 60 and up in the last)."""
    return GENDER_AGE_BANDS[bisect.bisect_right(GENDER_AGE_BAND_EDGES, age)]


def gender_codes(genders: ArrayLike) -> np.ndarray:
    """Gender codes as int64 with -1 for unknown.

    Args:
        genders: float codes (:data:`MALE`, :data:`FEMALE`), NaN for unknown, as a cache index stores them.

    Returns:
        int64 array, -1 where unknown.
    """
    g = np.asarray(genders, dtype=np.float64)
    return np.where(np.isnan(g), -1, np.nan_to_num(g)).astype(np.int64)
