"""Train/val/test splits: deterministic, stratified by age band x gender, grouped by identity.

Each unit (an identity, or a single record without one) is placed by a hash of (seed, unit), not by
shuffling a list, so a split does not depend on the order records were read in, and adding records
moves few existing ones. Within each stratum units are cut at the val/test fractions of its records.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from facial_demographics.datasets.errors import DataError, DataNotFoundError
from facial_demographics.datasets.loader import load_dataset
from facial_demographics.datasets.records import Record
from facial_demographics.labels import GENDER_LABELS, age_band

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitPart:
    """The records of one split, and the keys of records the split file does not mention."""

    name: str
    records: list[Record]
    missing: list[str]


def stratum(record: Record) -> str:
    """``"<age band>/<gender>"``, e.g. ``"20-39/female"``; unknown parts read ``unknown``."""
    band = "unknown" if record.age is None else age_band(record.age)
    gender = "unknown" if record.gender is None else GENDER_LABELS[record.gender]
    return f"{band}/{gender}"


def _unit_id(record: Record) -> str:
    return f"id:{record.identity}" if record.identity else f"key:{record.key}"


def _rank(seed: int, unit: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{unit}".encode(), digest_size=8).digest()


def make_split(records: Sequence[Record], *, val: float = 0.1, test: float = 0.1,
               seed: int = 42) -> dict[str, str]:
    """Map every record key to "train", "val" or "test".

    Records sharing an identity always land in the same split; the identity's stratum is its most
    common one, so stratification is approximate for people photographed at many ages.
    """
    if not (0 <= val and 0 <= test and val + test < 1):
        raise DataError(f"val ({val}) and test ({test}) must be >= 0 and sum to less than 1")
    units: dict[str, list[Record]] = defaultdict(list)
    keys: set[str] = set()
    for r in records:
        if r.key in keys:
            raise DataError(f"duplicate record key {r.key!r}: keys must be unique to split")
        keys.add(r.key)
        units[_unit_id(r)].append(r)

    strata: dict[str, list[str]] = defaultdict(list)
    for unit, members in units.items():
        counts = Counter(stratum(r) for r in members)
        strata[min(counts, key=lambda s: (-counts[s], s))].append(unit)

    mapping: dict[str, str] = {}
    for name in sorted(strata):
        ordered = sorted(strata[name], key=lambda u: (_rank(seed, u), u))
        total = sum(len(units[u]) for u in ordered)
        done = 0
        for unit in ordered:
            size = len(units[unit])
            middle = (done + size / 2) / total  # where this unit sits within the stratum, 0..1
            split = "test" if middle < test else "val" if middle < test + val else "train"
            done += size
            for r in units[unit]:
                mapping[r.key] = split
    return mapping


def split_counts(mapping: Mapping[str, str]) -> dict[str, int]:
    counts = Counter(mapping.values())
    return {name: counts.get(name, 0) for name in SPLITS}


def write_split(mapping: Mapping[str, str], path: str | Path) -> Path:
    """Write a split as CSV (columns key,split; sorted by key so diffs stay readable).

    The file appears whole or not at all (written beside it, then renamed): the ranks of a multi-process
    run may each make the same split at once, and a reader must never see half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with partial.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["key", "split"])
        for key in sorted(mapping):
            writer.writerow([key, mapping[key]])
    os.replace(partial, path)
    return path


def read_split(path: str | Path) -> dict[str, str]:
    """Read a split CSV (columns key,split; other columns are ignored), or several joined by commas.

    The one split reader: training, evaluation, robustness and calibration all select faces with it, so
    a split file is accepted or refused the same way everywhere. Several files (``"splits/utkface.csv,
    splits/morph.csv"``) are how a run trains on more than one dataset: their keys are merged, and a key
    in two of them is refused like a key repeated in one.

    Args:
        path: the CSV file (UTF-8, a byte-order mark is allowed), or several paths joined by commas.

    Returns:
        key -> split name ("train", "val" or "test").

    Raises:
        DataNotFoundError: a file does not exist.
        DataError: a bad header, an unknown split name or a repeated key; the message names the file,
            the row and the key.
    """
    mapping: dict[str, str] = {}
    origin: dict[str, Path] = {}
    for part in split_paths(path):
        for key, split in _read_one_split(part).items():
            if key in mapping:
                raise DataError(f"{part}: key {key!r} is also in {origin[key]} (each key may be in one split file)")
            mapping[key] = split
            origin[key] = part
    return mapping


def split_paths(path: str | Path) -> list[Path]:
    """The files of a split argument: one path, or several joined by commas (blanks around them ignored)."""
    return [Path(p.strip()) for p in str(path).split(",") if p.strip()]


def _read_one_split(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataNotFoundError(f"{path}: split file not found")
    mapping: dict[str, str] = {}
    first_row: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"key", "split"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected columns key,split, found {reader.fieldnames}")
        for number, row in enumerate(reader, start=1):
            key, split = row["key"], row["split"]
            if split not in SPLITS:
                raise DataError(f"{path}: row {number} ({key}): split {split!r} not one of {SPLITS}")
            # A repeated key is refused, not resolved: `data split` writes each key once, so a repeat
            # comes from a hand edit or two files pasted together. If the rows disagree (train vs test),
            # keeping either one could put test faces into training; even identical rows mean the file
            # is not the one the user thinks. Naming file, row and key lets them fix it in a minute.
            if key in mapping:
                raise DataError(f"{path}: row {number}: key {key!r} repeated (first in row {first_row[key]}, "
                                "each key may appear once)")
            mapping[key] = split
            first_row[key] = number
    return mapping


def apply_split(records: Sequence[Record], mapping: Mapping[str, str], name: str) -> SplitPart:
    """The records assigned to split ``name``; records the mapping lacks are reported in ``missing``."""
    if name not in SPLITS:
        raise DataError(f"unknown split {name!r} (expected one of {SPLITS})")
    chosen = [r for r in records if mapping.get(r.key) == name]
    missing = [r.key for r in records if r.key not in mapping]
    return SplitPart(name, chosen, missing)


def publish_split(dataset: str | Path, out: str | Path, *, val: float = 0.1, test: float = 0.1,
                  seed: int = 42, format: str | None = None) -> dict[str, int]:
    """Read a dataset, split it and write the split CSV (how ``splits/utkface.csv`` is made)."""
    result = load_dataset(dataset, format=format)
    mapping = make_split(result.records, val=val, test=test, seed=seed)
    write_split(mapping, out)
    return split_counts(mapping)
