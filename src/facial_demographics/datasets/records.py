"""The one record type every dataset reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field

#: UTKFace race codes (gender codes and names are in :mod:`facial_demographics.labels`).
RACE_LABELS: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")


@dataclass(frozen=True)
class Record:
    """One labelled image.

    ``key`` is a stable identifier (the path relative to the dataset root) used by split
    files and caches; ``age`` and ``gender`` are None when unknown; ``groups`` holds any
    other labels (race, identity, ...) as strings.
    """

    path: str
    key: str
    age: float | None = None
    gender: int | None = None
    groups: dict[str, str] = field(default_factory=dict)
    source: str = ""
    identity: str | None = None


@dataclass(frozen=True)
class Rejected:
    """An item a reader could not use, with the reason (nothing is dropped silently)."""

    item: str
    reason: str


@dataclass
class ReadResult:
    """What a reader returns: the usable records and the rejected items (seen = used + rejected)."""

    records: list[Record]
    rejected: list[Rejected]
    source: str = ""
    #: Items used although part of their label was unusable (e.g. a UTKFace name without race).
    notes: list[Rejected] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return len(self.records) + len(self.rejected)
