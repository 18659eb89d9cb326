"""From what ``analyze`` wrote (JSON Lines, or a JSON array) and from bundles to the estimator's inputs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UserError
from ..labels import MAX_AGE
from ..types import p_female
from .bands import AgeBands
from .calibration import N_AGES, PopulationCalibration
from .estimator import DEFAULT_INTERVAL, Evidence, PopulationSummary, estimate
from .identity import DESCRIPTOR_DIM, UNIQUE_THRESHOLD, DescriptorsMissingError, Grouping, group_faces, people_evidence

if TYPE_CHECKING:
    from ..model import ModelBundle



class RecordsError(UserError, ValueError):
    """A results file that cannot be summarised (not ``analyze`` output, or without age distributions)."""


def calibration_of(bundle: ModelBundle) -> PopulationCalibration | None:
    """The bundle's population calibration (manifest key ``population``), None when it has none."""
    doc = bundle.spec.source.get("population")
    return None if doc is None else PopulationCalibration.from_dict(doc)


_NO_DISTRIBUTION = ("a face has no age_distribution (written by an older version, or by a model with a regression "
                    "age head); run analyze again with this version")


def evidence_from_faces(faces: Iterable[Mapping[str, Any]]) -> Evidence:
    """Evidence from ``Face.to_dict()`` dicts.

    Raises:
        ValueError: a face without a usable age distribution.
    """
    found = ResultSet()
    for face in faces:
        found.add_face(face)
    return found.evidence()


@dataclass
class ResultSet:
    """What a set of results files holds: the faces' evidence and the counts a summary reports beside it.

    Faces are kept in their compact form and turned into one matrix by :meth:`evidence`: an array per
    face would cost more than the estimate itself at 100,000 faces.
    """

    starts: list[int] = field(default_factory=list)
    probs: list[list[float]] = field(default_factory=list)
    p_female: list[float] = field(default_factory=list)
    descriptors: list[list[float] | None] = field(default_factory=list)  # analyze --unique's, per face
    image_of: list[int] = field(default_factory=list)  # the image (0-based, reading order) of each face
    images: int = 0
    errors: int = 0  # images analyze could not read
    no_face: int = 0  # readable images in which no face was found
    broken_lines: int = 0  # lines that are not JSON objects (a run cut off mid-line, a stray edit)
    files: list[str] = field(default_factory=list)

    def add_face(self, face: Mapping[str, Any]) -> None:
        """Take one face dict (``Face.to_dict()``).

        Raises:
            ValueError: the face has no ``age_distribution`` or a malformed one.
        """
        dist = face.get("age_distribution")
        if dist is None:
            raise ValueError(_NO_DISTRIBUTION)
        start, p = (dist.get("start"), dist.get("p")) if isinstance(dist, dict) else (None, None)
        if not isinstance(start, int) or not isinstance(p, list) or start < 0 or start + len(p) > N_AGES:
            raise ValueError(f'age_distribution must be {{"start": int, "p": [numbers]}} within ages 0..{MAX_AGE}')
        pf = p_female(face.get("gender"), face.get("gender_probability"))
        self.starts.append(start)
        self.probs.append(p)
        self.p_female.append(float("nan") if pf is None else float(pf))
        descriptor = face.get("descriptor")
        usable = isinstance(descriptor, list) and len(descriptor) == DESCRIPTOR_DIM
        self.descriptors.append(descriptor if usable else None)
        self.image_of.append(self.images - 1)

    def add_image(self, record: Mapping[str, Any]) -> None:
        """Count one image record and take its faces.

        Raises:
            ValueError: a face without a usable age distribution.
        """
        self.images += 1
        if record.get("error"):
            self.errors += 1
            return
        faces = record.get("faces") or []
        if not faces:
            self.no_face += 1
        for face in faces:
            self.add_face(face)

    def evidence(self) -> Evidence:
        """The faces as one (N, 101) matrix, each row renormalised.

        Raises:
            RecordsError: a distribution with a negative, non-numeric or non-finite value, or no mass (the
                message names the files read).
        """
        try:
            return self._evidence()
        except ValueError as exc:
            raise RecordsError(f"{', '.join(self.files) or 'faces'}: {exc}") from None

    def _evidence(self) -> Evidence:
        out = np.zeros((len(self.probs), N_AGES))
        try:
            for row, start, p in zip(out, self.starts, self.probs, strict=True):
                row[start:start + len(p)] = p
        except (TypeError, ValueError):
            raise ValueError("an age_distribution holds a value that is not a number") from None
        totals = out.sum(axis=1)
        bad = ~np.isfinite(totals) | (totals <= 0) | (out < 0).any(axis=1)
        if bad.any():
            raise ValueError(f"face {int(np.argmax(bad)) + 1} (in reading order) has an age_distribution with a "
                             "negative or non-finite value, or no probability mass")
        return Evidence(out / totals[:, None], np.array(self.p_female, dtype=np.float64))

    def grouping(self, threshold: float) -> Grouping:
        """Faces grouped into people by their descriptors (``--unique``).

        Raises:
            DescriptorsMissingError: a face without a descriptor (the results were written without --unique).
        """
        if any(d is None for d in self.descriptors):
            raise DescriptorsMissingError(
                f"{', '.join(self.files) or 'faces'}: --unique needs each face's descriptor; write the results "
                "with analyze --unique")
        vectors = np.asarray(self.descriptors, dtype=np.float64).reshape(-1, DESCRIPTOR_DIM)
        return group_faces(vectors, self.image_of, threshold)

    def context(self) -> dict[str, Any]:
        """The counts ``summary.json`` carries beside the shares."""
        return {"images": self.images, "errors": self.errors, "no_face": self.no_face,
                "broken_lines": self.broken_lines, "files": list(self.files)}


def _is_image_record(value: Any) -> bool:
    return isinstance(value, dict) and "faces" in value and isinstance(value["faces"], list)


def _lines(path: Path, text: str, out: ResultSet) -> Iterator[dict[str, Any]]:
    good = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            out.broken_lines += 1
            continue
        if not _is_image_record(value):
            out.broken_lines += 1
            continue
        good += 1
        yield value
    if not good:
        raise RecordsError(f"{path}: not analyze output (no line is an image record with a \"faces\" list; "
                           "write it with analyze -f jsonl)")


def _records(path: Path, out: ResultSet) -> Iterator[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RecordsError(f"{path}: is a folder; give analyze's .jsonl file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordsError(f"{path}: cannot read it as UTF-8 text ({exc})") from None
    if not text.strip():
        raise RecordsError(f"{path}: empty file (no results to summarise)")
    if text.lstrip().startswith("["):  # analyze -f json: one array
        try:
            array = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordsError(f"{path}: broken JSON array ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(array, list) or not all(_is_image_record(v) for v in array):
            raise RecordsError(f"{path}: not analyze output (a JSON array, but not of image records)")
        yield from array
        return
    yield from _lines(path, text, out)


def read_results(paths: Iterable[str | Path]) -> ResultSet:
    """Read ``analyze`` results (``-f jsonl`` or ``-f json``) from one or more files.

    Broken lines are counted (``broken_lines``), not fatal; images with errors or without faces are
    counted, not dropped.

    Raises:
        RecordsError: a file that is missing, empty, not analyze output, or whose faces carry no age
            distribution; the message names the file and the reason.
    """
    out = ResultSet()
    for p in paths:
        path = Path(p)
        out.files.append(str(path))
        number = 0
        try:
            for number, record in enumerate(_records(path, out), start=1):  # noqa: B007
                out.add_image(record)
        except ValueError as exc:
            if isinstance(exc, RecordsError):
                raise
            raise RecordsError(f"{path}: record {number}: {exc}") from None
    return out


def summarize(results: Iterable[Any], bundle: ModelBundle | None = None, bands: AgeBands | str | None = None,
              interval: float = DEFAULT_INTERVAL, seed: int = 0, unique: bool = False) -> PopulationSummary:
    """The population summary of analysed images: the Python form of ``summarize``.

    Args:
        results: ``ImageResult`` objects or their ``to_dict()`` records (errors and empty images are counted).
        bundle: the model that analysed them (its population calibration is used); None: the default model.
        bands: :class:`AgeBands`, their ``--bands`` text or a preset name; None: the audience brackets.
        interval: probability of the intervals.
        seed: the bootstrap's seed.
        unique: count each person once across the images (the faces need descriptors: ``analyze --unique``).

    Returns:
        The summary (``to_dict()`` is ``summary.json``; :func:`~.report.write_summary` writes the files).

    Raises:
        RecordsError: a face without an age distribution.
        DescriptorsMissingError: ``unique`` without descriptors.
        InvalidValueError: bad bands or interval.
    """
    from ..model import ModelBundle

    found = ResultSet()
    for number, item in enumerate(results, start=1):
        try:
            found.add_image(item if isinstance(item, Mapping) else item.to_dict())
        except ValueError as exc:
            raise RecordsError(f"result {number}: {exc}") from None
    parsed = bands if isinstance(bands, AgeBands) else AgeBands.parse(bands)
    cal = calibration_of(bundle if bundle is not None else ModelBundle.load(None))
    return estimate_results(found, parsed, cal, interval, seed, unique)


def estimate_results(found: ResultSet, bands: AgeBands, calibration: PopulationCalibration | None,
                     interval: float = DEFAULT_INTERVAL, seed: int = 0, unique: bool = False) -> PopulationSummary:
    """:func:`estimate` over what was read, per face or (``unique``) per person.

    Raises:
        RecordsError: a malformed distribution.
        DescriptorsMissingError: ``unique`` without descriptors.
    """
    ev, context = found.evidence(), found.context()
    people = None
    if unique:
        grouping = found.grouping(UNIQUE_THRESHOLD)
        ev, people = people_evidence(ev, grouping), grouping.people
        context["unique"] = {"threshold": UNIQUE_THRESHOLD, "faces": len(found.probs), "people": people}
    return estimate(ev, bands, calibration=calibration, interval=interval, seed=seed, people=people,
                    faces=len(found.probs), context=context)
