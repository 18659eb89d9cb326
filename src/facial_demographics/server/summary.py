"""Population summaries over analysed images: shares of each age band and gender, with intervals.

``POST /v1/summary`` analyses uploaded images exactly as ``POST /v1/analyze`` does (same limits, memory
budget and per-file errors) and summarises their faces; ``POST /v1/summary/results`` summarises results
a client already has (what ``/v1/analyze`` answered, over any number of requests: the web page sends one
photo per request and asks for the summary of all of them, and again when the bands change).

Both go through :func:`facial_demographics.population.estimate` with the model's population calibration,
reading each face's ``age_distribution`` as ``summarize`` reads ``analyze``'s JSON Lines, so the API, the
page and the command give the same numbers for the same faces. The estimate runs in a worker thread,
one at a time (its bootstrap takes seconds for a thousand faces on two cores), on at most
``MAX_SUMMARY_FACES`` faces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Query
from starlette.concurrency import run_in_threadpool

from ..errors import InvalidValueError
from .errors import ApiError
from .schemas import SummaryOut

if TYPE_CHECKING:
    from ..population import AgeBands, PopulationCalibration, PopulationSummary

#: Most faces one summary may count: the EM estimate with its bootstrap took 4.6 s for 2,000 faces on this
#: project's 2-core machine at load 4 (with a population calibration; without one, 0.2 s).
MAX_SUMMARY_FACES = 2000
#: Seconds a summary waits for the one running before it to finish before 503.
SUMMARY_WAIT = 10.0
#: The context keys a summary carries beside its shares (``ResultSet.context`` has more for files).
_CONTEXT_KEYS = ("images", "errors", "no_face")

BANDS_QUERY = Query(
    None, max_length=200,
    description="Age bands: a preset (audience, report, life-stage) or the first age of every band after the "
    "first, e.g. 13,18,25,35,45,55,65 (the default, the audience brackets).",
)
INTERVAL_QUERY = Query(0.9, gt=0, lt=1, description="Central probability of the intervals.")


def parse_bands(text: str | None) -> AgeBands:
    """The bands of a ``bands`` query value.

    Raises:
        ApiError: 422 ``invalid_bands`` naming what is wrong with the text.
    """
    from ..population import AgeBands

    try:
        return AgeBands.parse(text)
    except InvalidValueError as exc:
        raise ApiError(422, "invalid_bands", str(exc), "bands") from None


def calibration_for(analyzer: Any) -> PopulationCalibration | None:
    """The population calibration in the analyzer's bundle; None without one (or for a wrapped analyzer).

    Raises:
        CalibrationError: the bundle's ``population`` section is malformed (the server must not start).
    """
    from ..population.records import calibration_of

    model = getattr(analyzer, "model", None)
    bundle = getattr(model, "bundle", None)
    return None if bundle is None else calibration_of(bundle)


def _count_faces(records: Iterable[Mapping[str, Any]]) -> int:
    return sum(len(r.get("faces") or []) for r in records if not r.get("error"))


def _estimate(records: Sequence[Mapping[str, Any]], bands: AgeBands, interval: float,
              calibration: PopulationCalibration | None) -> PopulationSummary:
    """The summary of ``records`` (``ImageResult.to_dict()`` shapes), in a worker thread.

    Raises:
        ApiError: 422 ``invalid_age_distribution`` for a face without a usable age distribution.
    """
    from ..population import estimate
    from ..population.records import ResultSet

    results = ResultSet()
    for number, record in enumerate(records, start=1):
        try:
            results.add_image(record)
        except ValueError as exc:
            name = record.get("path") or f"result {number}"
            raise ApiError(422, "invalid_age_distribution", f"{name}: {exc}", str(name)) from None
    context = {k: v for k, v in results.context().items() if k in _CONTEXT_KEYS}
    try:  # the values themselves are checked once, when the faces become one matrix
        evidence = results.evidence()
    except ValueError as exc:
        raise ApiError(422, "invalid_age_distribution", str(exc).removeprefix("faces: "), None) from None
    return estimate(evidence, bands, calibration=calibration, interval=interval, context=context)


@dataclass
class Summariser:
    """Runs summaries one at a time in a worker thread, with the model's population calibration.

    Args:
        calibration: the serving bundle's calibration (None: the estimate falls back to ``sum`` and says so).
    """

    calibration: PopulationCalibration | None = None
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))

    async def summarise(self, records: Sequence[Mapping[str, Any]], bands: AgeBands, interval: float) -> SummaryOut:
        """The summary of image results (``ImageResult.to_dict()`` shapes, failed images with ``error``).

        Raises:
            ApiError: 422 over ``MAX_SUMMARY_FACES`` faces or for a face without an age distribution;
                503 while other summaries keep the worker busy.
        """
        faces = _count_faces(records)
        if faces > MAX_SUMMARY_FACES:
            raise ApiError(422, "too_many_faces", f"{faces} faces: a summary may count at most {MAX_SUMMARY_FACES}; "
                           "summarise fewer images")
        try:
            await asyncio.wait_for(self.slots.acquire(), SUMMARY_WAIT)
        except asyncio.TimeoutError:
            raise ApiError(503, "server_busy", "other summaries are being estimated; retry later",
                           headers={"Retry-After": str(int(SUMMARY_WAIT))}) from None
        # The thread cannot be stopped: when the client goes away, the slot is freed only when it is done.
        work = asyncio.ensure_future(run_in_threadpool(_estimate, records, bands, interval, self.calibration))
        work.add_done_callback(self._release)
        summary = await asyncio.shield(work)
        return SummaryOut.model_validate(summary.to_dict())

    def _release(self, work: asyncio.Future[Any]) -> None:
        self.slots.release()
        if not work.cancelled():
            work.exception()  # retrieved here when nobody awaits it any more (the client left)
