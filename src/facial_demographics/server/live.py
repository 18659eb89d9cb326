"""Live camera: the page sends camera frames one by one, each answered with tracked faces.

A client opens a session (``POST /v1/live/sessions``), then posts each frame as a JPEG body to
``/v1/live/sessions/{id}/frames`` and waits for the answer before sending the next one, so a slow
server lowers the frame rate instead of queueing frames. Each session has its own tracker (ByteTrack
plus per-track evidence, see ``video.tracking``), so the answers shown for a person steady over time.
Plain HTTP keeps the API key, CORS and limits of the rest of the API; no WebSocket package is needed.

Memory and CPU are bounded: at most ``MAX_SESSIONS`` sessions (idle ones expire after
``IDLE_TIMEOUT`` s), frames of at most ``MAX_FRAME_BYTES`` and ``MAX_FRAME_PIXELS``, one frame per
session at a time, and at most ``LIVE_WORKERS`` frames analysed at once across sessions.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from .. import imaging
from .errors import ApiError, image_error_status
from .schemas import ErrorResponse

MAX_SESSIONS = 8
IDLE_TIMEOUT = 30.0  # seconds without a frame before a session is closed
MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_FRAME_PIXELS = 1920 * 1080
LIVE_WORKERS = 2  # frames analysed at once across all sessions (the machine has few cores)
FRAME_WAIT = 5.0  # seconds a frame may wait for a worker before 503



class SessionOut(BaseModel):
    session: str = Field(description="Send frames to /v1/live/sessions/{session}/frames.")
    idle_timeout: float = Field(description="Seconds without a frame after which the session is closed.")
    max_frame_bytes: int
    max_frame_pixels: int


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
    server_ms: float = Field(description="Time spent on this frame in the server.")


@dataclass
class _Session:
    tracker: Any  # video.tracking.FaceTracker
    started: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    frames: int = 0
    last_time: float = -1.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


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
        self.workers = asyncio.Semaphore(LIVE_WORKERS)
        self._shared: dict[str, Any] = {}  # one detector for all sessions (it is thread-safe)

    def expire(self) -> None:
        """Close the sessions that have been idle for longer than ``IDLE_TIMEOUT``."""
        now = time.monotonic()
        for key in [k for k, s in self.sessions.items() if now - s.last_seen > IDLE_TIMEOUT and not s.lock.locked()]:
            del self.sessions[key]

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

    async def open(self) -> SessionOut:
        """A new session with its own tracker; 503 when ``MAX_SESSIONS`` are open."""
        self.expire()
        if len(self.sessions) >= MAX_SESSIONS:
            raise ApiError(503, "too_many_sessions", f"{MAX_SESSIONS} live sessions are open; retry later",
                           headers={"Retry-After": str(int(IDLE_TIMEOUT))})
        key = secrets.token_urlsafe(12)
        self.sessions[key] = _Session(await run_in_threadpool(self._new_tracker))
        return SessionOut(session=key, idle_timeout=IDLE_TIMEOUT, max_frame_bytes=MAX_FRAME_BYTES,
                          max_frame_pixels=MAX_FRAME_PIXELS)

    def close(self, key: str) -> None:
        if self.sessions.pop(key, None) is None:
            raise ApiError(404, "no_session", f"no live session {key[:40]!r}", "session")

    async def frame(self, key: str, request: Request, t: float | None) -> FrameOut:
        """Decode, track and analyse one frame of session ``key``, at time ``t`` (default: now)."""
        self.expire()
        state = self.sessions.get(key)
        if state is None:
            raise ApiError(404, "no_session", f"no live session {key[:40]!r} (closed or expired)", "session")
        if state.lock.locked():
            raise ApiError(409, "frame_in_progress", "send the next frame after the answer to the previous one")
        async with state.lock:
            state.last_seen = time.monotonic()
            body = await _read_body(request)
            started = time.perf_counter()
            image = await run_in_threadpool(_decode, body)
            when = t if t is not None else time.monotonic() - state.started
            when = max(when, state.last_time + 1e-3)  # times must grow for the tracker
            try:
                await asyncio.wait_for(self.workers.acquire(), FRAME_WAIT)
            except asyncio.TimeoutError:
                raise ApiError(503, "server_busy", "too many live frames at once; retry",
                               headers={"Retry-After": "1"}) from None
            try:
                step = await run_in_threadpool(state.tracker.step, image, state.frames, when)
                state.tracker.drop_ended()
            finally:
                self.workers.release()
            state.frames += 1
            state.last_time = when
            state.last_seen = time.monotonic()
        return FrameOut(frame=state.frames - 1, time=round(when, 3), width=image.shape[1], height=image.shape[0],
                        faces=[LiveFaceOut.model_validate(f.to_dict()) for f in step.faces],
                        tracks=[LiveTrackOut.model_validate(s.answer_dict()) for s in step.tracks],
                        ended=[s.track_id for s in step.ended],
                        server_ms=round(1000 * (time.perf_counter() - started), 1))


def live_router(get_analyzer: Callable[[], Any], dependencies: Sequence[Any] = ()) -> APIRouter:
    """The live-camera routes, sharing the app's analyzer.

    Args:
        get_analyzer: returns the app's ``FaceAnalyzer`` (or None while the model loads).
        dependencies: the API's dependencies (the API key check).
    """
    router = APIRouter(prefix="/v1/live", tags=["live camera"], dependencies=list(dependencies))
    live = LiveSessions(get_analyzer)

    @router.post("/sessions", response_model=SessionOut, status_code=201, responses=_RESPONSES)
    async def open_session() -> SessionOut:
        """Start a live session: its own tracker, closed after a while without frames."""
        return await live.open()

    @router.delete("/sessions/{session}", status_code=204, responses=_RESPONSES)
    async def close_session(session: str) -> Response:
        """End a live session (idle sessions also end by themselves)."""
        live.close(session)
        return Response(status_code=204)

    @router.post("/sessions/{session}/frames", response_model=FrameOut, openapi_extra={"requestBody": _FRAME_BODY},
                 responses={**_RESPONSES,
                            409: {"model": ErrorResponse, "description": "A frame of this session is in work."},
                            413: {"model": ErrorResponse, "description": "Frame over the size or pixel limit."},
                            415: {"model": ErrorResponse, "description": "Not an image."},
                            422: {"model": ErrorResponse, "description": "Empty or broken image."}})
    async def frame(request: Request, session: str, t: float | None = Query(
            None, ge=0, description="The frame's time in seconds from the start (default: when it arrives).")
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
