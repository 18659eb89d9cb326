"""A live session's tally: how many different people it has seen, by age band and gender.

Each person counts once. A person is a track (``video.tracking``: one person while they stay in view,
through short occlusions); when the tracker re-identifies people and gives tracks a ``person_id``, tracks
with the same ``person_id`` are one person (someone who leaves and comes back is not counted again), and a
track counted before it was recognised moves to its person. A person's band and gender are their latest
combined answer while in view and their final answer once their track has ended; a gender the tracker has
not decided yet (the model is unsure) counts as ``unknown``. A track counts from when its usable face has
spanned a second; one that never does (a *glimpse*, ``video.people.is_glimpse``: mostly the detector's rare
false positives) is never counted, so the running and the final tally count people by the ``video``
command's rule. A live session re-identifies
people when dlib is installed (``live.py``); ``reid`` says whether it does, and ``note`` why not.

Memory is bounded: a session remembers at most ``MAX_PEOPLE`` people by key; past that, the one not seen
for longest is folded into fixed counts (if they come back under the same ``person_id``, they count again).
An ended session's tally is folded completely, so keeping it after the session costs a few hundred bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from ..population import AgeBands

MAX_PEOPLE = 5000
GENDERS = ("female", "male", "unknown")


class TallyRowOut(BaseModel):
    band: str
    female: int
    male: int
    unknown: int = Field(description="People whose gender is undecided (or a model without a gender head).")
    total: int


class TallyOut(BaseModel):
    """Unique people seen in a live session, by age band and gender."""

    people: int = Field(description="Different people seen in the session so far.")
    open: int = Field(description="Of them, people still in view: their band and gender may still change.")
    counted_by: Literal["track", "person"] = Field(
        description="'track': each tracked person counts once; 'person': the tracker re-identifies people, "
        "so someone who leaves and comes back counts once.")
    ended: bool = Field(description="The session has ended and this tally is final.")
    reid: bool = Field(default=False, description="The session re-identifies people: someone who leaves and "
                       "comes back counts once (from when their new track ends).")
    note: str | None = Field(default=None, description="Why re-identification is off, when it is.")
    bands: list[str]
    rows: list[TallyRowOut] = Field(description="One row per band, youngest first.")
    female: int
    male: int
    unknown: int


@dataclass
class _Person:
    band: int
    gender: int  # index into GENDERS
    open: bool


class LiveTally:
    """The tally of one live session.

    Args:
        bands: the age bands people are counted in.
    """

    def __init__(self, bands: AgeBands) -> None:
        self.bands = bands
        self.people: OrderedDict[tuple[str, int], _Person] = OrderedDict()  # least recently seen first
        self.folded = np.zeros((len(bands), len(GENDERS)), dtype=np.int64)
        self.by_person = False
        self.ended = False
        self.reid = False
        self.note: str | None = None

    def set_reid(self, missing: str | None) -> None:
        """Re-identification is on (``missing`` None) or off, and why (``video.reid.reid_unavailable``)."""
        self.reid, self.note = missing is None, missing

    def update(self, track: Any, ended: bool) -> None:
        """Count (or re-count) the person of ``track``, a ``TrackSummary``; ``ended``: its final answer."""
        if self.ended:  # a frame that was in work when the session closed
            return
        person_id = getattr(track, "person_id", None)
        if person_id is not None:
            self.by_person = True
            self.people.pop(("track", track.track_id), None)  # counted before it was recognised
            key = ("person", int(person_id))
        else:
            key = ("track", int(track.track_id))
        band = int(self.bands.index(np.array([track.age]))[0])
        gender = GENDERS.index(track.gender) if track.gender in GENDERS[:2] else 2
        self.people.pop(key, None)
        self.people[key] = _Person(band, gender, not ended)
        while len(self.people) > MAX_PEOPLE:
            _, oldest = self.people.popitem(last=False)
            self.folded[oldest.band, oldest.gender] += 1

    def discard(self, track: Any) -> None:
        """Take out ``track``, an ended glimpse. Open tracks count only once they are not glimpses (``live.py``),
        so this is a safeguard: a glimpse never stays in the tally, whoever counted it."""
        if not self.ended:
            self.people.pop(("track", int(track.track_id)), None)

    def close(self) -> None:
        """The session ended: fold everyone into the counts, and take no more updates."""
        for person in self.people.values():
            self.folded[person.band, person.gender] += 1
        self.people.clear()
        self.ended = True

    def counts(self) -> np.ndarray:
        """(bands, 3) people per band and gender (female, male, unknown)."""
        out = self.folded.copy()
        for person in self.people.values():
            out[person.band, person.gender] += 1
        return out

    def to_out(self) -> TallyOut:
        counts = self.counts()
        rows = [TallyRowOut(band=name, female=int(row[0]), male=int(row[1]), unknown=int(row[2]),
                            total=int(row.sum())) for name, row in zip(self.bands.names, counts, strict=True)]
        female, male, unknown = (int(v) for v in counts.sum(axis=0))
        return TallyOut(people=int(counts.sum()), open=sum(p.open for p in self.people.values()),
                        counted_by="person" if self.by_person else "track", ended=self.ended,
                        reid=self.reid, note=self.note,
                        bands=list(self.bands.names), rows=rows, female=female, male=male, unknown=unknown)
