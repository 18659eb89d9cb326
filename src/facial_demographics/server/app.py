"""The FastAPI app: JSON API under ``/v1``, health check, and the offline web page at ``/``.

Multi-file uploads are decided per file: when at least one image was analysed the answer is 200 and
each failed file carries ``error`` and ``error_code`` in its result; when none was, the answer is the
first failure's 4xx with the usual error body (and every file's error in ``errors``). ``/v1/summary``
takes the same uploads through the same steps and adds the population summary of their faces (summary.py).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Security
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__, imaging
from ..types import ImageResult
from .batching import MicroBatcher, QueueFullError
from .budget import BudgetFullError, MemoryBudget, Reservation
from .errors import ApiError, image_error_status, install_error_handlers, validation_message
from .face_filters import MIN_FACE_QUERY, MIN_SCORE_QUERY, apply_filter, face_filter
from .live import live_router
from .memory import rss_bytes, trim
from .models_route import models_router
from .protocol import GUARD_STATE, ConnectionGuard
from .schemas import (
    AnalyzeResponse,
    ErrorResponse,
    HealthResponse,
    ImageOut,
    ModelInfo,
    SummaryRequest,
    SummaryResponse,
    SummaryResultsResponse,
)
from .settings import ServerSettings
from .summary import BANDS_QUERY, INTERVAL_QUERY, Summariser, calibration_for, parse_bands
from .uploads import Form, OnBytes, Upload, check_content_length, read_body, read_multipart

if TYPE_CHECKING:
    from ..filters import FaceFilter
    from ..population import AgeBands

log = logging.getLogger(__name__)
T = TypeVar("T")

STATIC_DIR = Path(__file__).parent / "static"
#: A body's memory is reserved in steps of this much ahead of the bytes received (never from Content-Length).
BODY_STEP = 256 * 1024

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
    "script-src 'self'; style-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# /docs and /redoc: their pages start Swagger UI / ReDoc with inline script and style; everything else
# must come from here (the bundles under /static-offline-docs), which also stops ReDoc's remote logo.
_DOCS_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Invalid request or image."},
    500: {"model": ErrorResponse, "description": "Unexpected server error (details only in the server log)."},
}


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` written in place: a request body documented through
    ``openapi_extra`` cannot point into the schema's own ``$defs`` (refs resolve from the document's root)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)  # type: ignore[no-any-return]


def _results_body() -> dict[str, Any]:
    """The documented JSON body of ``POST /v1/summary/results`` (the endpoint reads it itself, bounded)."""
    return {"required": True, "content": {"application/json": {"schema": _inline_schema(SummaryRequest)}}}


def _analyze_body(max_files: int) -> dict[str, Any]:
    """The documented multipart body (the endpoint reads the stream itself, see uploads.py)."""
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "minItems": 1,
                            "maxItems": max_files,
                            "description": "One or more images (JPEG, PNG, WebP, BMP, TIFF).",
                        },
                        "annotate": {"type": "boolean", "description": "Same as the query parameter."},
                    },
                }
            }
        },
    }


class Analyzer(Protocol):
    """What the app needs from ``FaceAnalyzer`` (tests may wrap one)."""

    @property
    def manifest(self) -> dict[str, Any]: ...

    def analyze_batch(self, sources: Sequence[Any]) -> list[ImageResult]: ...

    def warm_up(self) -> None: ...


@dataclass
class _Runtime:
    """Per-app state, filled in by the lifespan (the app holds no module-level mutable state)."""

    analyzer: Analyzer | None = None
    batcher: MicroBatcher | None = None
    summariser: Summariser | None = None
    budget: MemoryBudget = field(default_factory=lambda: MemoryBudget(1))
    # Decoding more uploads at once than there are cores gains nothing and multiplies peak memory.
    decoding: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(min(4, os.cpu_count() or 1))
    )


@dataclass
class _Decoded:
    upload: Upload
    header: imaging.ImageHeader | None = None
    image: np.ndarray | None = None
    error: ApiError | None = None


def load_analyzer(settings: ServerSettings) -> Analyzer:
    """The analyzer with both graphs loaded and run once.

    Raises:
        BundleError: the model bundle cannot be used (the server must not start with it).
    """
    from ..pipeline import FaceAnalyzer

    analyzer = FaceAnalyzer(model=settings.model, max_pixels=settings.max_pixels, batch_size=settings.batch_size,
                            device=settings.device)
    analyzer.warm_up()
    return analyzer


class SecurityHeaders:
    """Conservative headers on every response; a strict CSP, relaxed for inline script on /docs and /redoc."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] in ("/docs", "/redoc", "/docs/oauth2-redirect")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"permissions-policy", b"camera=(self), microphone=(), geolocation=()"),
                ]
                headers.append((b"content-security-policy", (_DOCS_CSP if docs else _PAGE_CSP).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _api_key_dependency(expected: str) -> Any:
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's API key.")
    bearer = HTTPBearer(auto_error=False, description="The server's API key as a bearer token.")
    expected_bytes = expected.encode()

    async def require_api_key(
        key: str | None = Security(header), token: HTTPAuthorizationCredentials | None = Security(bearer)
    ) -> None:
        given = key if key is not None else (token.credentials if token is not None else None)
        if given is None or not hmac.compare_digest(given.encode(), expected_bytes):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong API key (send X-API-Key or Authorization: Bearer)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_api_key


def _image_error(upload: Upload, exc: imaging.ImageError) -> ApiError:
    status, code = image_error_status(exc)
    return ApiError(status, code, f"{upload.filename}: {exc.reason}", upload.filename)


def _scan_headers(uploads: list[Upload], max_pixels: int) -> list[_Decoded]:
    """Each upload's header (size, mode) or its error, without decoding any pixels."""
    scanned = []
    for upload in uploads:
        try:
            header = imaging.read_header(upload.data, max_pixels=max_pixels, name=upload.filename)
            scanned.append(_Decoded(upload, header=header))
        except imaging.ImageError as exc:
            scanned.append(_Decoded(upload, error=_image_error(upload, exc)))
    return scanned


def _decode_all(scanned: list[_Decoded], max_pixels: int) -> None:
    """Decode the uploads whose header was fine, in place; the raw bytes are dropped as soon as they are."""
    for item in scanned:
        upload = item.upload
        if item.error is None:
            try:
                item.image = imaging.read_image(bytes(upload.data), max_pixels=max_pixels, name=upload.filename)
            except imaging.ImageError as exc:
                item.error = _image_error(upload, exc)
        upload.data.clear()


def _annotated_jpeg(image: np.ndarray, result: ImageResult, max_side: int) -> bytes:
    """Boxes and labels drawn on a copy downscaled to ``max_side`` (drawing at full size would cost
    the full-size copy and a response of many MB), as JPEG."""
    from dataclasses import replace

    from PIL import Image

    from ..annotate import draw

    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    faces = result.faces
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
        faces = [replace(f, box=tuple(v * scale for v in f.box),  # type: ignore[arg-type]
                         landmarks=[(x * scale, y * scale) for x, y in f.landmarks]) for f in faces]
    return imaging.encode_jpeg(draw(image, faces), quality=85)


def _over_budget(what: str, need: int, limit: int) -> ApiError:
    return ApiError(
        413,
        "request_too_large",
        f"{what} needs about {need / 2**20:.0f} MB of memory once decoded, over the per-request limit of "
        f"{limit / 2**20:.0f} MB; send fewer or smaller images",
    )


async def _annotate_entries(
    decoded: list[_Decoded], results: dict[int, ImageResult], out: list[ImageOut], settings: ServerSettings
) -> None:
    """Attach annotated JPEGs in upload order until the response's annotation budget is spent."""
    spent = 0
    for item, entry in zip(decoded, out, strict=True):
        result = results.get(id(item))
        if item.image is None or result is None or entry.error is not None:
            continue
        if spent >= settings.max_annotated_bytes:
            entry.annotated_note = (f"annotated image left out: this response already carries "
                                    f"{settings.max_annotated_bytes / 2**20:.0f} MB of them")
            continue
        jpeg = await run_in_threadpool(_annotated_jpeg, item.image, result, settings.annotate_max_side)
        encoded = base64.b64encode(jpeg).decode("ascii")
        spent += len(encoded)
        entry.annotated_jpeg = encoded


async def _respond(
    decoded: list[_Decoded], results: dict[int, ImageResult], annotate: bool, settings: ServerSettings,
    filtered: dict[int, int] | None = None,
) -> AnalyzeResponse:
    """One entry per upload in order; the first failure's 4xx when no upload succeeded (module docstring).
    ``filtered``: the faces the request's filter dropped per analysed upload (each entry's ``filtered``)."""
    out: list[ImageOut] = []
    failures: list[ApiError] = []
    for item in decoded:
        name = item.upload.filename
        result = results.get(id(item))
        if result is not None and result.error is not None:
            item.error = ApiError(422, "analysis_failed", f"{name}: {result.error}", name)
        if item.error is not None:
            failures.append(item.error)
            detail = item.error.detail
            out.append(
                ImageOut(
                    path=name, width=None, height=None, faces=[], error=detail.message, error_code=detail.code
                )
            )
            continue
        assert result is not None and item.image is not None
        dropped = {} if filtered is None or id(item) not in filtered else {"filtered": filtered[id(item)]}
        out.append(ImageOut.model_validate({**result.to_dict(), "path": name, **dropped}))
    if len(failures) == len(decoded):
        first = failures[0].detail
        errors = [f.detail for f in failures] if len(failures) > 1 else []
        raise ApiError(failures[0].status, first.code, first.message, first.item, errors=errors)
    if annotate:
        await _annotate_entries(decoded, results, out, settings)
    return AnalyzeResponse(results=out)


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    raise ApiError(422, "invalid_request", f"{name} must be true or false, got {value[:40]!r}", name)


@dataclass
class _Service:
    """One app's settings and runtime, and the request steps its routes share."""

    settings: ServerSettings
    runtime: _Runtime

    def batcher(self) -> MicroBatcher:
        if self.runtime.batcher is None:
            raise ApiError(503, "starting", "the model is still loading", headers={"Retry-After": "5"})
        return self.runtime.batcher

    def summariser(self) -> Summariser:
        if self.runtime.summariser is None:
            raise ApiError(503, "starting", "the model is still loading", headers={"Retry-After": "5"})
        return self.runtime.summariser

    @asynccontextmanager
    async def reservation(self) -> AsyncIterator[Reservation]:
        """Memory of the server's budget that grows as the request needs it (its body as the bytes arrive,
        then its pixels), all released at the end; 503 when a step does not fit in time."""
        try:
            async with self.runtime.budget.growing(self.settings.memory_wait) as held:
                yield held
        except BudgetFullError as exc:
            raise ApiError(503, "server_busy", f"server busy: {exc}; retry later",
                           headers={"Retry-After": str(exc.retry_after)}) from None

    def body_reserver(self, held: Reservation, factor: int = 1) -> OnBytes:
        """``on_bytes`` for the upload readers: ``factor`` × the bytes received (a step ahead) stay reserved."""
        limit = min(factor * self.settings.max_upload_bytes, self.settings.request_memory_bytes)

        async def on_bytes(received: int) -> None:
            if factor * received > held.held:
                await held.grow_to(min(factor * (received + BODY_STEP), max(factor * received, limit)))

        return on_bytes

    async def receive_form(self, request: Request, held: Reservation) -> Form:
        settings = self.settings
        return await self.receive(request, read_multipart(
            request.headers.get("content-type"),
            request.stream(),
            max_bytes=settings.max_upload_bytes,
            max_files=settings.max_files,
            on_bytes=self.body_reserver(held),
        ))

    async def receive(self, request: Request, reading: Awaitable[T]) -> T:
        """Await ``reading`` (of the request body) within the request timeout; 408 or 400 when it fails."""
        try:
            return await asyncio.wait_for(reading, self.settings.request_timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, "request_timeout", "the upload was not received in time") from None
        except ClientDisconnect:
            # Routine on the open internet: one line, no traceback (nobody is left to answer).
            client = request.client.host if request.client else "?"
            log.info("client %s disconnected during the upload to %s", client, request.url.path)
            raise ApiError(400, "client_disconnected", "the client went away during the upload") from None

    async def analyse(self, scanned: list[_Decoded], queue: MicroBatcher) -> dict[int, ImageResult]:
        async with self.runtime.decoding:
            await run_in_threadpool(_decode_all, scanned, self.settings.max_pixels)
        good = [d for d in scanned if d.image is not None]
        if not good:
            return {}
        try:
            results = await asyncio.wait_for(
                queue.submit([d.image for d in good if d.image is not None]), self.settings.request_timeout
            )
        except QueueFullError as exc:
            raise _queue_full(exc) from None
        except asyncio.TimeoutError:
            raise ApiError(
                504, "timeout", "the analysis did not finish in time; try fewer or smaller images"
            ) from None
        return dict(zip(map(id, good), results, strict=True))

    async def analyze_request(self, request: Request, annotate: bool, rule: FaceFilter) -> AnalyzeResponse:
        """The body of ``POST /v1/analyze``: admit, reserve memory, read, decode, analyse, filter the faces
        (``rule``, face_filters.py), respond."""
        settings = self.settings
        check_content_length(request.headers.get("content-length"), settings.max_upload_bytes)
        queue = self.batcher()
        try:
            queue.check_capacity(1)  # refuse early, before reading the body
        except QueueFullError as exc:
            raise _queue_full(exc) from None
        async with self.reservation() as held:  # the body is reserved as it arrives, then its pixels
            form = await self.receive_form(request, held)
            if "annotate" in form.fields:
                annotate = annotate or _flag(form.fields["annotate"], "annotate")
            if not form.files:
                raise ApiError(422, "no_files", "no file uploaded: send one or more images in the 'file' field")
            body_bytes = sum(len(f.data) for f in form.files)
            scanned = await run_in_threadpool(_scan_headers, form.files, settings.max_pixels)
            pixels = sum(d.header.decode_bytes for d in scanned if d.header is not None)
            if body_bytes + pixels > settings.request_memory_bytes:
                what = "this image" if len(scanned) == 1 else f"this request's {len(scanned)} images"
                raise _over_budget(what, body_bytes + pixels, settings.request_memory_bytes)
            await held.grow_to(body_bytes + pixels)
            results = await self.analyse(scanned, queue)
            filtered = apply_filter(results, rule)
            return await _respond(scanned, results, annotate, settings, filtered)

    async def summary_request(self, request: Request, bands: AgeBands, interval: float,
                              annotate: bool, rule: FaceFilter) -> SummaryResponse:
        """The body of ``POST /v1/summary``: ``/v1/analyze``'s steps, then the summary of every result (of
        the faces ``rule`` kept).

        The images' memory is released before the estimate starts (it needs only the faces' numbers).
        """
        summariser = self.summariser()
        analysed = await self.analyze_request(request, annotate, rule)
        records = [entry.model_dump(exclude_none=True) for entry in analysed.results]
        summary = await summariser.summarise(records, bands, interval)
        return SummaryResponse(summary=summary, results=analysed.results)

    async def results_summary(self, request: Request, bands: AgeBands, interval: float) -> SummaryResultsResponse:
        """The body of ``POST /v1/summary/results``: read the JSON (bounded like an upload), validate, summarise."""
        settings = self.settings
        summariser = self.summariser()
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, "unsupported_media_type", "send the results as application/json")
        check_content_length(request.headers.get("content-length"), settings.max_upload_bytes)
        # Parsed JSON takes a few times its text: 4 × the bytes received stay reserved.
        async with self.reservation() as held:
            body = await self.receive(request, read_body(request.stream(), settings.max_upload_bytes,
                                                         self.body_reserver(held, factor=4)))
            try:
                parsed = SummaryRequest.model_validate_json(body)
            except ValidationError as exc:
                raise ApiError(422, "invalid_request", validation_message(exc.errors())) from None
            del body
            records = [entry.model_dump(exclude_none=True) for entry in parsed.results]
            return SummaryResultsResponse(summary=await summariser.summarise(records, bands, interval))


def _queue_full(exc: QueueFullError) -> ApiError:
    return ApiError(503, "queue_full", f"server busy: {exc}; retry later",
                    headers={"Retry-After": str(exc.retry_after)})


_ANALYZE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed multipart body."},
    408: {"model": ErrorResponse, "description": "The upload took longer than the time limit."},
    413: {
        "model": ErrorResponse,
        "description": "Upload over the size limit, image over the pixel limit, or images needing "
        "more memory than one request may use.",
    },
    415: {"model": ErrorResponse, "description": "Not an image, or an unsupported format."},
    503: {
        "model": ErrorResponse,
        "description": "Too many queued images, or the server's image memory is in use; see Retry-After.",
    },
    504: {"model": ErrorResponse, "description": "The analysis took longer than the time limit."},
}


def _lifespan(service: _Service, analyzer: Analyzer | None) -> Any:
    """Load (or take) the analyzer and start the micro-batcher when the app starts; stop it at the end."""
    settings, runtime = service.settings, service.runtime

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        loaded = analyzer if analyzer is not None else await run_in_threadpool(load_analyzer, settings)
        await run_in_threadpool(loaded.warm_up)  # a no-op when loaded; a given analyzer may be cold
        runtime.analyzer = loaded
        runtime.summariser = Summariser(await run_in_threadpool(calibration_for, loaded))
        runtime.batcher = MicroBatcher(
            loaded.analyze_batch,
            batch_size=settings.batch_size,
            max_wait=settings.batch_wait_ms / 1000,
            max_queue=settings.max_queue,
            threads=settings.inference_threads,
        )
        await runtime.batcher.start()
        runtime.budget.start()  # the process's size with the models loaded: its memory beyond counts
        log.info("memory baseline %.0f MiB; budget %.0f MiB beyond it", runtime.budget.baseline / 2**20,
                 runtime.budget.capacity / 2**20)
        guard = ConnectionGuard(settings.max_connections, settings.max_client_connections, settings.header_timeout,
                                settings.max_header_bytes)
        try:
            yield {GUARD_STATE: guard}  # read by the connection protocol
        finally:
            log.info("connections at shutdown: %s", guard.snapshot())
            await runtime.batcher.stop()

    return lifespan


def _auth(settings: ServerSettings) -> list[Any]:
    """The dependencies that guard ``/v1/*``: the API key check when one is set."""
    return [Depends(_api_key_dependency(settings.api_key))] if settings.api_key else []


def _api_router(service: _Service) -> APIRouter:
    """``/v1/analyze`` and ``/v1/model``, behind the API key when one is set."""
    settings = service.settings
    auth = _auth(settings)
    unauthorized: dict[int | str, dict[str, Any]] = (
        {401: {"model": ErrorResponse, "description": "Missing or wrong API key."}} if settings.api_key else {}
    )
    api = APIRouter(prefix="/v1", dependencies=auth, responses=unauthorized)

    @api.post("/analyze", tags=["analysis"], response_model=AnalyzeResponse, response_model_exclude_unset=True,
              openapi_extra={"requestBody": _analyze_body(settings.max_files)}, responses=_ANALYZE_RESPONSES)
    async def analyze(
        request: Request,
        annotate: bool = Query(
            False, description="Also return each image with boxes and labels, as a downscaled base64 JPEG."
        ),
        min_face: int = MIN_FACE_QUERY,
        min_score: float = MIN_SCORE_QUERY,
    ) -> AnalyzeResponse:
        """Analyse one or more images sent as multipart/form-data in the field `file`. With `min_face` or
        `min_score`, the faces they leave out are not in the answer; each image's `filtered` counts them."""
        return await service.analyze_request(request, annotate, face_filter(min_face, min_score))

    @api.get("/model", response_model=ModelInfo, tags=["model"])
    async def model() -> ModelInfo:
        """The loaded model bundle's manifest: name, version, input, heads, provenance."""
        if service.runtime.analyzer is None:
            raise ApiError(503, "starting", "the model is still loading", headers={"Retry-After": "5"})
        return ModelInfo.model_validate(service.runtime.analyzer.manifest)

    api.include_router(models_router(settings.model))  # GET /v1/models
    _add_summary_routes(api, service)
    return api


_SUMMARY_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ANALYZE_RESPONSES,
    422: {"model": ErrorResponse, "description": "Invalid request, bands or image; more faces than a summary may "
          "count (too_many_faces)."},
    503: {"model": ErrorResponse, "description": "Too many queued images, the server's image memory is in use, or "
          "other summaries are being estimated; see Retry-After."},
}
_RESULTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "Body over the upload size limit."},
    415: {"model": ErrorResponse, "description": "Not application/json."},
    422: _SUMMARY_RESPONSES[422],
    503: {"model": ErrorResponse, "description": "Memory or the summary worker is busy; see Retry-After."},
}


def _add_summary_routes(api: APIRouter, service: _Service) -> None:
    """``POST /v1/summary`` (images) and ``POST /v1/summary/results`` (results a client already has)."""

    @api.post("/summary", tags=["population"], response_model=SummaryResponse, response_model_exclude_unset=True,
              openapi_extra={"requestBody": _analyze_body(service.settings.max_files)},
              responses=_SUMMARY_RESPONSES)
    async def summary(
        request: Request,
        bands: str | None = BANDS_QUERY,
        interval: float = INTERVAL_QUERY,
        annotate: bool = Query(False, description="As for /v1/analyze."),
        min_face: int = MIN_FACE_QUERY,
        min_score: float = MIN_SCORE_QUERY,
    ) -> SummaryResponse:
        """Analyse images as `/v1/analyze` does and estimate the make-up of the people in them: the share of
        each age band, gender and band x gender with intervals (`summarize`'s summary.json). Unreadable files
        are counted in `summary.errors`; when none could be read the answer is the first one's error. Only
        the faces `min_face` and `min_score` keep are in the results and counted."""
        rule = face_filter(min_face, min_score)
        return await service.summary_request(request, parse_bands(bands), interval, annotate, rule)

    @api.post("/summary/results", tags=["population"], response_model=SummaryResultsResponse,
              openapi_extra={"requestBody": _results_body()}, responses=_RESULTS_RESPONSES)
    async def summary_of_results(
        request: Request, bands: str | None = BANDS_QUERY, interval: float = INTERVAL_QUERY
    ) -> SummaryResultsResponse:
        """The summary of results you already have: `{"results": [...]}` with the entries `/v1/analyze`
        answered (from any number of requests; each face needs its `age_distribution`, images with `error`
        are counted as unreadable). Bands can change without sending the images again."""
        return await service.results_summary(request, parse_bands(bands), interval)


def _add_page_and_health(app: FastAPI, service: _Service) -> None:
    @app.get("/healthz", response_model=HealthResponse, tags=["health"])
    async def healthz() -> HealthResponse:
        """Liveness: answers while inference runs; `queued` shows the load."""
        queue = service.batcher()
        return HealthResponse(status="ok", queued=queue.pending, max_queue=queue.max_queue)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    # HEAD for uptime checkers and load balancers (uvicorn sends the headers without the body).
    app.add_api_route("/", page, methods=["HEAD"], include_in_schema=False)
    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def create_app(settings: ServerSettings | None = None, *, analyzer: Analyzer | None = None) -> FastAPI:
    """Build the app; the analyzer is loaded at startup unless one is given (tests share one)."""
    settings = settings or ServerSettings()
    budget = MemoryBudget(settings.server_memory_bytes, resident=rss_bytes, reclaim=trim)
    service = _Service(settings, _Runtime(budget=budget))
    # FastAPIOffline serves Swagger UI and ReDoc from the installed package (/static-offline-docs),
    # not a CDN, so /docs and /redoc work without internet; no validator badge (it calls swagger.io).
    app = FastAPIOffline(
        title="facial-demographics",
        summary="Find every face in a photo and estimate its age (with an interval) and gender.",
        version=__version__,
        swagger_ui_parameters={"validatorUrl": None},
        lifespan=_lifespan(service, analyzer),
        debug=False,
        responses=_ERROR_RESPONSES,
    )
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)
    app.include_router(_api_router(service))
    _add_page_and_health(app, service)
    app.include_router(live_router(lambda: service.runtime.analyzer, _auth(settings)))
    return app
