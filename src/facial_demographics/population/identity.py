"""Counting each person once across a collection of photos (``--unique``).

Each face gets the 128-d descriptor of dlib's face-recognition ResNet (the CC0 model of the ``teacher`` and
``video`` extras, loaded by :class:`~facial_demographics.datasets.descriptors.FaceDescriber`), written into
its record as ``descriptor``. Faces are then grouped greedily in reading order: a face joins the person
whose mean descriptor is nearest, when that is within :data:`UNIQUE_THRESHOLD` and the person has no other
face in the same photo (one person is never twice in one picture); otherwise it starts a new person. The
choice is written down per face (``person``, ``distance``) so it can be checked.

A person's evidence is the mean of their faces' age distributions and P(female): one person, one vote,
however many photos they are in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from .estimator import Evidence

#: Largest distance between a face and a person's mean descriptor at which it is that person; chosen with
#: ``benchmarks/population.py unique`` on generated collections of validation faces (60 people in 1-6
#: photos each, 3 collections): 0.40 counted 58 of 60 people on average, with 3 groups holding two people
#: and 1 person split, the fewest errors of 0.35-0.60 (0.50: 11 merged groups; dlib's 0.6: 21).
UNIQUE_THRESHOLD = 0.4
DESCRIPTOR_DIM = 128


class DescriptorsMissingError(UserError, ValueError):
    """``--unique`` on results written without descriptors."""


@dataclass(frozen=True)
class Grouping:
    """Which person each face is (``person[i]``, 0-based, in order of first appearance) and the distance to
    the person it joined (NaN for a person's first face)."""

    person: np.ndarray
    distance: np.ndarray

    @property
    def people(self) -> int:
        return int(self.person.max()) + 1 if len(self.person) else 0


def group_faces(descriptors: np.ndarray, images: Sequence[int], threshold: float = UNIQUE_THRESHOLD) -> Grouping:
    """Group faces into people (see the module text).

    Args:
        descriptors: (N, 128) float descriptors, in reading order.
        images: the image index of each face (faces of one image are never one person).
        threshold: the largest joining distance.

    Returns:
        The grouping.
    """
    n = len(descriptors)
    person = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, np.nan)
    sums: list[np.ndarray] = []
    counts: list[int] = []
    last_image: list[int] = []
    for i in range(n):
        if sums:
            centres = np.stack(sums) / np.asarray(counts, dtype=np.float64)[:, None]
            d = np.linalg.norm(centres - descriptors[i], axis=1)
            d[np.asarray(last_image) == images[i]] = np.inf  # already in this photo
            best = int(np.argmin(d))
            if d[best] <= threshold:
                person[i], distance[i] = best, float(d[best])
                sums[best] = sums[best] + descriptors[i]
                counts[best] += 1
                last_image[best] = images[i]
                continue
        person[i] = len(sums)
        sums.append(descriptors[i].astype(np.float64))
        counts.append(1)
        last_image.append(images[i])
    return Grouping(person, distance)


def people_evidence(ev: Evidence, grouping: Grouping) -> Evidence:
    """One row per person: the mean of their faces' age distributions and P(female)."""
    k = grouping.people
    counts = np.bincount(grouping.person, minlength=k).astype(np.float64)
    probs = np.zeros((k, ev.age_probs.shape[1]))
    np.add.at(probs, grouping.person, ev.age_probs)
    pf = np.bincount(grouping.person, weights=np.nan_to_num(ev.p_female, nan=0.0), minlength=k) / counts
    if np.isnan(ev.p_female).any():
        pf = np.full(k, np.nan)
    return Evidence(probs / counts[:, None], pf)


class Describer:
    """Descriptors for the faces of one image (dlib loaded on first use).

    Raises:
        TeacherMissingError: dlib or its model files are not installed.
    """

    def __init__(self) -> None:
        from ..datasets.descriptors import FaceDescriber, teacher_model_files

        self._files = teacher_model_files()  # fails now, before any work
        self._describer: FaceDescriber | None = None

    def describe(self, image: np.ndarray, landmarks: Sequence[Sequence[Sequence[float]]]) -> list[list[float]]:
        """One rounded descriptor per face (``landmarks``: each face's five (x, y) points)."""
        from ..datasets.descriptors import FaceDescriber

        if self._describer is None:
            self._describer = FaceDescriber(self._files)
        return [[round(float(v), 4) for v in self._describer.describe(image, np.asarray(points, np.float64))]
                for points in landmarks]
