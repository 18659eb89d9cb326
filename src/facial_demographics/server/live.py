"""Live camera: the page sends camera frames one by one, each answered with tracked faces.

A client opens a session (``POST /v1/live/sessions``), then posts each frame as a JPEG body to
``/v1/live/sessions/{id}/frames`` and waits for the answer before sending the next one, so a slow
server lowers the frame rate instead of queueing frames. Each session has its own tracker (ByteTrack
plus per-track evidence, see ``video.tracking``), so the answers shown for a person steady over time.
Plain HTTP keeps the API key, CORS and limits of the rest of the API; no WebSocket package is needed.

Each session keeps a tally of the different people it has seen by age band and gender (``tally.py``),
sent with every frame's answer. It outlives the session: ``GET /v1/live/sessions/{id}/tally`` answers
for ``ENDED_KEEP`` seconds after the session was closed or expired (the page fetches the final tally
after "Stop"); at most ``MAX_ENDED`` ended tallies are kept, each folded to its counts.

People who leave and come back count once: when dlib is installed, each session re-identifies people
as ``video`` does, with the same code (``video.reid``, ``video.people``): while a track runs, its best
frames are kept as small crops; when it ends (its face gone for the tracker's ``lost_after``), they are
described (dlib's 128-d face descriptor, about 80 ms each, at most ``REID_FRAMES``) and the track joins
the person of the nearest earlier track within ``REID_THRESHOLD`` who was out of view meanwhile. Ended
tracks are answered with their ``person_id`` (``ended_tracks``) and the tally counts people by it. A
session keeps at most ``LIVE_REID_PEOPLE`` people for matching (the tally still counts the others). Without
dlib each track is a person and the tally says re-identification is off.

Memory and CPU are bounded: at most ``MAX_SESSIONS`` sessions (idle ones expire after
``IDLE_TIMEOUT`` s), frames of at most ``MAX_FRAME_BYTES`` and ``MAX_FRAME_PIXELS``, one frame per
session at a time, and at most ``LIVE_WORKERS`` frames analysed at once across sessions.

No client keeps the others out: when all sessions are taken, a client holding more than
``MAX_CLIENT_SESSIONS`` (by address) loses its least recently used one to a client with fewer (its next
frame gets 404 and its tally stays readable). Otherwise a new session gets 503 with Retry-After: the
seconds until the first idle expiry. Frame times (``t``) are finite, at most ``MAX_FRAME_TIME``, and do
not go back within a session (422).
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from .. import imaging
from .errors import ApiError, image_error_status
from .schemas import ErrorResponse
from .summary import BANDS_QUERY, parse_bands
from .tally import LiveTally, TallyOut

if TYPE_CHECKING:
    from ..video.people import People

MAX_SESSIONS = 8
IDLE_TIMEOUT = 30.0  # seconds without a frame before a session is closed
MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_FRAME_PIXELS = 1920 * 1080
LIVE_WORKERS = 2  # frames analysed at once across all sessions (the machine has few cores)
FRAME_WAIT = 5.0  # seconds a frame may wait for a worker before 503
ENDED_KEEP = 600.0  # seconds an ended session's tally can still be fetched
MAX_ENDED = 64  # ended sessions' tallies kept at most (the oldest go first)
MAX_CLIENT_SESSIONS = 2  # sessions a client address keeps when others want one and all are taken
MAX_FRAME_TIME = 1e7  # seconds from the session's start (116 days)


class SessionOut(BaseModel):
    session: str = Field(description="Send frames to /v1/live/sessions/{session}/frames.")
    idle_timeout: float = Field(description="Seconds without a frame after which the session is closed.")
    max_frame_bytes: int
    max_frame_pixels: int
    bands: list[str] = Field(description="The age bands of the session's tally.")


class LiveFaceOut(BaseModel):
    box: list[float] = Field(min_length=4, max_length=4)
    score: float
    landmarks: list[list[float]]
    age: float
    age_interval: list[float]
    age_group: str
    gender: str | None
    gender_probability: float | None
    track_id: int | None = Field(description="The face's track; null until it was seen in two frames.")


class LiveTrackOut(BaseModel):
    track_id: int
    person_id: int | None = Field(
        default=None, description="The re-identified person (the same across their tracks: the first track's id), "
        "set when the track has ended (`ended_tracks`) and re-identification is on; else null.")
    box: list[float] = Field(min_length=4, max_length=4)
    frames: int = Field(description="Frames this track's answer combines.")
    age: float
    age_interval: list[float]
    age_group: str
    gender: str | None
    gender_probability: float | None


class FrameOut(BaseModel):
    """One analysed frame: this frame's faces and the combined answer of each track seen in it."""

    frame: int
    time: float
    width: int
    height: int
    faces: list[LiveFaceOut]
    tracks: list[LiveTrackOut]
    ended: list[int] = Field(description="Tracks that ended with this frame (their person left).")
    ended_tracks: list[LiveTrackOut] = Field(
        default_factory=list, description="The final answers of the tracks in `ended`, each with its `person_id` "
        "when re-identification is on (null for a glimpse).")
    server_ms: float = Field(description="Time spent on this frame in the server.")
    tally: TallyOut = Field(description="The different people seen in this session so far.")


@dataclass
class _Session:
    tracker: Any  # video.tracking.FaceTracker
    tally: LiveTally
    people: People | None = None  # re-identification (None: off, each track is a person)
    client: str = ""
    started: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    frames: int = 0
    last_time: float = -1.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def finalise(self) -> None:
        """The final tally (in a worker thread: describing the open tracks takes a while): open tracks give
        their final answers, then everyone is folded into the counts."""
        if not self.tally.ended:
            ended = self.tracker.finish()
            glimpses = _glimpses(self.tracker, ended)
            if self.people is not None:
                ended = self.people.end(ended, self.tracker.evidence)
            count_ended(self.tally, ended, glimpses)
            self.tally.close()
            self.tracker.drop_ended()


def _glimpses(tracker: Any, tracks: Sequence[Any]) -> set[int]:
    """The ids of ``tracks`` that are glimpses (``video.people.is_glimpse``, the rule ``video`` counts by):
    nobody, for the tally (an open one: nobody yet)."""
    from ..video.people import is_glimpse

    return {t.track_id for t in tracks if is_glimpse(tracker.evidence(t.track_id))}


def count_ended(tally: LiveTally, ended: Sequence[Any], glimpses: set[int]) -> None:
    """Give ended tracks their final answers in the tally, and take glimpses out of it."""
    for track in ended:
        if track.track_id in glimpses:
            tally.discard(track)
        else:
            tally.update(track, ended=True)


def _track_step(state: _Session, image: Any, frame: int,
                when: float) -> tuple[Any, tuple[Any, ...], set[int], list[Any]]:
    """One tracker step (in a worker thread): the step, the final answers of the tracks it ended (with their
    ``person_id`` when re-identification is on), which of them were glimpses, and the open tracks that
    count as people already. The tracker forgets the ended tracks (the grouping keeps what matching needs)."""
    tracker = state.tracker
    step = tracker.step(image, frame, when)
    glimpses = _glimpses(tracker, step.ended)
    # An open track counts once its usable face has spanned the second that makes a person: counted any
    # sooner, a face shown for half a second would be in the running tally and gone from the final one.
    not_yet = _glimpses(tracker, step.tracks)
    people = [t for t in step.tracks if t.track_id not in not_yet]
    ended = step.ended
    if state.people is not None and state.people.reid is not None:
        state.people.reid.observe(image, when, step.faces)
        ended = tuple(state.people.end(step.ended, tracker.evidence))
    tracker.drop_ended()
    return step, ended, glimpses, people


_FRAME_BODY = {
    "required": True,
    "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}}},
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such session (closed, or expired after being idle)."},
    503: {"model": ErrorResponse, "description": "Too many sessions or frames at once; see Retry-After."},
}


class LiveSessions:
    """The open sessions of one app and the workers they share.

    Args:
        get_analyzer: returns the app's ``FaceAnalyzer`` (or None while the model loads).
    """

    def __init__(self, get_analyzer: Callable[[], Any]) -> None:
        self.get_analyzer = get_analyzer
        self.sessions: dict[str, _Session] = {}
        self.ended: OrderedDict[str, tuple[float, LiveTally]] = OrderedDict()  # oldest first
        self.workers = asyncio.Semaphore(LIVE_WORKERS)
        self._shared: dict[str, Any] = {}  # one detector for all sessions (it is thread-safe)
        self._finalising: dict[str, asyncio.Task[None]] = {}  # ended sessions whose final tally is in work

    def expire(self) -> None:
        """Close the sessions that have been idle for longer than ``IDLE_TIMEOUT``; forget old tallies."""
        now = time.monotonic()
        for key in [k for k, s in self.sessions.items() if now - s.last_seen > IDLE_TIMEOUT and not s.lock.locked()]:
            self._end(key)
        while self.ended and (len(self.ended) > MAX_ENDED or now - next(iter(self.ended.values()))[0] > ENDED_KEEP):
            self.ended.popitem(last=False)

    def _end(self, key: str) -> bool:
        """Remove session ``key``, keeping its final tally (finalised in a worker once a frame in work is
        done, see :meth:`_finalise`); False when there is no such session."""
        state = self.sessions.pop(key, None)
        if state is None:
            return False
        self.ended[key] = (time.monotonic(), state.tally)
        task = asyncio.get_running_loop().create_task(self._finalise(state))
        self._finalising[key] = task
        task.add_done_callback(lambda _: self._finalising.pop(key, None))
        return True

    async def _finalise(self, state: _Session) -> None:
        """End the open tracks of an ended session and fold its tally, after its frame in work (the tracker is
        not thread-safe) and in a worker (describing the open tracks for re-identification takes a while)."""
        async with state.lock, self.workers:
            await run_in_threadpool(state.finalise)

    async def finalised(self, key: str) -> None:
        """Wait until ended session ``key``'s tally is final (at once when it is, or there is no such session)."""
        task = self._finalising.get(key)
        if task is not None:
            await asyncio.shield(task)

    def _new_tracker(self) -> Any:
        analyzer = self.get_analyzer()
        if analyzer is None:
            raise ApiError(503, "starting", "the model is still loading", headers={"Retry-After": "5"})
        if importlib.util.find_spec("trackers") is None:
            raise ApiError(503, "live_unavailable", "live camera needs the 'video' extra on the server: "
                           "pip install 'facial-demographics[video]'")
        if not hasattr(analyzer, "detector") or not hasattr(analyzer, "model"):
            raise ApiError(503, "live_unavailable", "this server's analyzer cannot track faces")
        from ..video.tracking import FaceTracker, tracking_detector

        if self._shared.get("analyzer") is not analyzer:
            self._shared.update(analyzer=analyzer, detector=tracking_detector(analyzer))
        return FaceTracker(analyzer, detector=self._shared["detector"])

    def _new_session(self, tally: LiveTally, client: str) -> _Session:
        """A session with a new tracker and, when dlib is installed, re-identification (module docstring)."""
        from ..video.people import LIVE_REID_PEOPLE, People
        from ..video.reid import Reidentifier, reid_unavailable

        tracker = self._new_tracker()
        missing = reid_unavailable()
        people = None
        if missing is None:
            people = People(Reidentifier(tracker.model.bundle.input_size), max_people=LIVE_REID_PEOPLE)
        tally.set_reid(missing)
        return _Session(tracker, tally, people, client)

    async def open(self, bands: str | None = None, client: str = "") -> SessionOut:
        """A new session with its own tracker and a tally in ``bands`` for ``client`` (its address); when
        ``MAX_SESSIONS`` are open, one of a client over its share ends, else 503 (module docstring)."""
        tally = LiveTally(parse_bands(bands))
        self.expire()
        if len(self.sessions) >= MAX_SESSIONS and not self._make_room(client):
            now = time.monotonic()
            free_in = min((s.last_seen + IDLE_TIMEOUT - now for s in self.sessions.values()), default=1.0)
            retry = max(1, min(int(IDLE_TIMEOUT), math.ceil(free_in)))
            raise ApiError(503, "too_many_sessions", f"{MAX_SESSIONS} live sessions are open; the first may be "
                           f"free in {retry} s", headers={"Retry-After": str(retry)})
        key = secrets.token_urlsafe(12)
        self.sessions[key] = await run_in_threadpool(self._new_session, tally, client)
        return SessionOut(session=key, idle_timeout=IDLE_TIMEOUT, max_frame_bytes=MAX_FRAME_BYTES,
                          max_frame_pixels=MAX_FRAME_PIXELS, bands=list(tally.bands.names))

    def _make_room(self, client: str) -> bool:
        """End the least recently used session of the client holding the most, when that is over
        ``MAX_CLIENT_SESSIONS`` and more than ``client`` holds; False when no client is over its share."""
        held: dict[str, int] = {}
        for state in self.sessions.values():
            held[state.client] = held.get(state.client, 0) + 1
        hog = max(held, key=lambda c: held[c])
        if held[hog] <= MAX_CLIENT_SESSIONS or held[hog] <= held.get(client, 0) + 1:
            return False
        key = min((k for k, s in self.sessions.items() if s.client == hog), key=lambda k: self.sessions[k].last_seen)
        return self._end(key)

    async def close(self, key: str) -> None:
        """End session ``key`` and wait for its final tally."""
        self.expire()
        if not self._end(key):
            raise ApiError(404, "no_session", f"no live session {key[:40]!r}", "session")
        await self.finalised(key)

    async def tally(self, key: str) -> TallyOut:
        """The tally of session ``key``, open or ended up to ``ENDED_KEEP`` seconds ago (final once ended)."""
        self.expire()
        state = self.sessions.get(key)
        if state is not None:
            return state.tally.to_out()
        await self.finalised(key)
        if key in self.ended:
            return self.ended[key][1].to_out()
        raise ApiError(404, "no_session", f"no live session {key[:40]!r} (or it ended over "
                       f"{ENDED_KEEP / 60:.0f} minutes ago)", "session")

    async def frame(self, key: str, request: Request, t: float | None) -> FrameOut:
        """Decode, track and analyse one frame of session ``key``, at time ``t`` (default: now)."""
        self.expire()
        state = self.sessions.get(key)
        if state is None:
            raise ApiError(404, "no_session", f"no live session {key[:40]!r} (closed or expired)", "session")
        if state.lock.locked():
            raise ApiError(409, "frame_in_progress", "send the next frame after the answer to the previous one")
        if t is not None and t < state.last_time:
            raise ApiError(422, "invalid_time", f"t={t:g} is before the previous frame's time "
                           f"({state.last_time:g} s): frame times must not go back", "t")
        async with state.lock:  # a session closed meanwhile is finalised after this frame (``_finalise``)
            started = time.perf_counter()
            step, ended, image, when = await self._step(state, request, t)
        return FrameOut(frame=state.frames - 1, time=round(when, 3), width=image.shape[1], height=image.shape[0],
                        faces=[LiveFaceOut.model_validate(f.to_dict()) for f in step.faces],
                        tracks=[_track_out(s) for s in step.tracks],
                        ended=[s.track_id for s in ended], ended_tracks=[_track_out(s) for s in ended],
                        server_ms=round(1000 * (time.perf_counter() - started), 1), tally=state.tally.to_out())

    async def _step(self, state: _Session, request: Request,
                    t: float | None) -> tuple[Any, tuple[Any, ...], Any, float]:
        """Read, decode and track one frame under the session's lock; count its people in the tally.

        Returns:
            The tracker's step, the final answers of the tracks that ended (with ``person_id``), the decoded
            image and the frame's time.
        """
        state.last_seen = time.monotonic()
        body = await _read_body(request)
        image = await run_in_threadpool(_decode, body)
        when = t if t is not None else time.monotonic() - state.started
        when = max(when, state.last_time + 1e-3)  # times must grow for the tracker
        try:
            await asyncio.wait_for(self.workers.acquire(), FRAME_WAIT)
        except asyncio.TimeoutError:
            raise ApiError(503, "server_busy", "too many live frames at once; retry",
                           headers={"Retry-After": "1"}) from None
        try:
            step, ended, glimpses, people = await run_in_threadpool(_track_step, state, image, state.frames, when)
        finally:
            self.workers.release()
        for track in people:
            state.tally.update(track, ended=False)
        count_ended(state.tally, ended, glimpses)
        state.frames += 1
        state.last_time = when
        state.last_seen = time.monotonic()
        return step, ended, image, when


def _track_out(track: Any) -> LiveTrackOut:
    """A track's running answer, with its ``person_id`` where the tracker re-identifies people."""
    return LiveTrackOut.model_validate({**track.answer_dict(), "person_id": getattr(track, "person_id", None)})


def live_router(get_analyzer: Callable[[], Any], dependencies: Sequence[Any] = ()) -> APIRouter:
    """The live-camera routes, sharing the app's analyzer.

    Args:
        get_analyzer: returns the app's ``FaceAnalyzer`` (or None while the model loads).
        dependencies: the API's dependencies (the API key check).
    """
    router = APIRouter(prefix="/v1/live", tags=["live camera"], dependencies=list(dependencies))
    live = LiveSessions(get_analyzer)

    @router.post("/sessions", response_model=SessionOut, status_code=201,
                 responses={**_RESPONSES, 422: {"model": ErrorResponse, "description": "Invalid bands."}})
    async def open_session(request: Request, bands: str | None = BANDS_QUERY) -> SessionOut:
        """Start a live session: its own tracker and tally of people in `bands`, closed after a while
        without frames."""
        return await live.open(bands, request.client.host if request.client else "")

    @router.delete("/sessions/{session}", status_code=204, responses=_RESPONSES)
    async def close_session(session: str) -> Response:
        """End a live session (idle sessions also end by themselves); its tally stays readable for a while."""
        await live.close(session)
        return Response(status_code=204)

    @router.get("/sessions/{session}/tally", response_model=TallyOut,
                responses={404: {"model": ErrorResponse, "description": "No such session, or it ended too long "
                                 "ago."}})
    async def session_tally(session: str) -> TallyOut:
        """The different people a session has seen by age band and gender; also for ten minutes after it
        ended (closed or expired), when it is final (`ended`: true)."""
        return await live.tally(session)

    @router.post("/sessions/{session}/frames", response_model=FrameOut, openapi_extra={"requestBody": _FRAME_BODY},
                 responses={**_RESPONSES,
                            409: {"model": ErrorResponse, "description": "A frame of this session is in work."},
                            413: {"model": ErrorResponse, "description": "Frame over the size or pixel limit."},
                            415: {"model": ErrorResponse, "description": "Not an image."},
                            422: {"model": ErrorResponse, "description": "Empty or broken image."}})
    async def frame(request: Request, session: str, t: float | None = Query(
            None, ge=0, le=MAX_FRAME_TIME, allow_inf_nan=False,
            description="The frame's time in seconds from the start (default: when it arrives); finite, and not "
            "before the previous frame's.")
    ) -> FrameOut:
        """Analyse one camera frame (JPEG or PNG body): faces with track ids and each track's answer."""
        return await live.frame(session, request, t)

    return router


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_FRAME_BYTES:
        raise ApiError(413, "upload_too_large", f"a frame may have at most {MAX_FRAME_BYTES // 2**20} MB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FRAME_BYTES:
            raise ApiError(413, "upload_too_large", f"a frame may have at most {MAX_FRAME_BYTES // 2**20} MB")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(body: bytes) -> Any:
    try:
        return imaging.read_image(body, max_pixels=MAX_FRAME_PIXELS, name="frame")
    except imaging.ImageError as exc:
        status, code = image_error_status(exc)
        raise ApiError(status, code, f"frame: {exc.reason}", "frame") from None
