"""Which split file a training run uses, and the split ``train`` makes itself when none is given.

The rule, in one place:

1. ``--split FILE``: that file.
2. ``--cache DIR`` without ``--split``: the config's split belongs to the config's own cache (UTKFace's
   published split names UTKFace's files), so the split is ``DIR/split.csv``, made from the cache the
   first time (seeded, grouped by identity when the data has one) and reused afterwards, so that
   ``evaluate`` and a second run see the same split.
3. Neither: the config's ``data.split``, looked up in the working directory and then in the checkout (a
   packaged config names ``splits/utkface.csv``); when it is in neither, a split is made as in 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..datasets.cache import load_cache
from ..datasets.records import Record
from ..datasets.splits import make_split, split_counts, split_paths, write_split
from .config import RunConfig

#: The checkout's root, where ``splits/`` lives when running from a clone.
CHECKOUT = Path(__file__).resolve().parents[3]
#: The split ``train`` writes into a cache folder.
SPLIT_NAME = "split.csv"


@dataclass(frozen=True)
class SplitChoice:
    """The split file a run uses; ``made`` with the counts when this call wrote it."""

    path: Path | None  # None: the config asks for no file (a hash of each key decides)
    made: bool = False
    counts: dict[str, int] | None = None
    by_identity: bool = False

    def describe(self) -> str:
        """One line for the user, e.g. ``made split cache/mine-112/split.csv: train 80, val 10, test 10``."""
        if self.path is None:
            return "split: none configured, 80/10/10 by a hash of each key"
        if not self.made or self.counts is None:
            return f"split: {self.path}"
        parts = ", ".join(f"{name} {n}" for name, n in self.counts.items())
        how = "people kept within one split (identity column)" if self.by_identity else "one photo per unit"
        return f"split: made {self.path} ({parts}; seeded, stratified by age band and gender, {how})"


def choose_split(cfg: RunConfig, *, cache_given: bool, split_given: bool) -> SplitChoice:
    """The split file for a run of ``cfg`` (overrides already applied), making one when needed.

    Args:
        cfg: the run config with ``--cache``/``--split`` applied.
        cache_given: ``--cache`` was given on the command line.
        split_given: ``--split`` was given (then ``cfg.data.split`` is used as it is).

    Returns:
        The choice; ``made`` when a new split file was written.

    Raises:
        DataNotFoundError, DataError: the cache cannot be read, or the split cannot be written.
    """
    configured = cfg.data.split
    if split_given or (configured is None and not cache_given):
        return SplitChoice(None if configured is None else Path(configured))
    if not cache_given and configured is not None:
        found = _find_files(configured)
        if found is not None:
            return SplitChoice(Path(found))
    target = Path(cfg.data.cache) / SPLIT_NAME
    if target.is_file():
        return SplitChoice(target)
    return make_cache_split(Path(cfg.data.cache), target, seed=cfg.train.seed)


def _find_files(configured: str) -> str | None:
    """``configured`` (one path, or several joined by commas) with each file found in the working directory
    or else the checkout, joined again; None when one of them is in neither."""
    found = []
    for part in split_paths(configured):
        hit = next((c for c in (part, CHECKOUT / part) if c.is_file()), None)
        if hit is None:
            return None
        found.append(str(hit))
    return ",".join(found)


def make_cache_split(cache_dir: Path, target: Path, *, seed: int, val: float = 0.1, test: float = 0.1,
                     ) -> SplitChoice:
    """Split the faces of a cache as ``data split`` splits a dataset, and write it to ``target``.

    Raises:
        DataNotFoundError, DataError: the cache cannot be read.
    """
    index = load_cache(cache_dir).index
    identities = index["identity"] if "identity" in index.columns else [None] * len(index)
    records = [Record(path=str(key), key=str(key), age=_number(age), gender=_code(gender),
                      identity=None if _missing(ident) else str(ident))
               for key, age, gender, ident in zip(index["key"], index["age"], index["gender"], identities,
                                                  strict=True)]
    mapping = make_split(records, val=val, test=test, seed=seed)
    write_split(mapping, target)
    by_identity = any(r.identity for r in records)
    return SplitChoice(target, made=True, counts=split_counts(mapping), by_identity=by_identity)


def _missing(value: object) -> bool:
    return value is None or value != value or value == ""  # NaN is the one value not equal to itself


def _number(value: object) -> float | None:
    return None if _missing(value) else float(value)  # type: ignore[arg-type]


def _code(value: object) -> int | None:
    return None if _missing(value) else int(value)  # type: ignore[call-overload]


def split_beside(cache: Path | None, given: Path | None) -> Path:
    """The split file for a command that reads a cache (``export``, ``calibrate``) when ``--split`` is not given:
    the cache's own ``split.csv`` (the one ``train`` made), else UTKFace's published split.

    Args:
        cache: the ``--cache`` folder, if any.
        given: ``--split`` as given (returned when set).
    """
    if given is not None:
        return given
    if cache is not None and (cache / SPLIT_NAME).is_file():
        return cache / SPLIT_NAME
    published = Path("splits/utkface.csv")
    return published if published.is_file() or not (CHECKOUT / published).is_file() else CHECKOUT / published
