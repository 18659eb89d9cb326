"""One JSON error shape for everything the app rejects, and handlers that never leak a traceback."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import imaging
from .schemas import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "upload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An expected failure with its HTTP status; raise it anywhere in a request, the handler renders it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        item: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: list[ErrorDetail] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(code=code, message=message, item=item)
        self.headers = dict(headers or {})
        self.errors = errors or []


def error_response(
    status: int,
    detail: ErrorDetail,
    headers: Mapping[str, str] | None = None,
    errors: list[ErrorDetail] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=detail, errors=errors or [])
    return JSONResponse(body.model_dump(), status_code=status, headers=dict(headers or {}))


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.detail, exc.headers, exc.errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, ErrorDetail(code=code, message=message), exc.headers)


def validation_message(errors: Sequence[Any]) -> str:
    """The first five problems of a pydantic or FastAPI validation, as ``where: what; ...``."""
    problems = []
    for err in errors[:5]:
        where = ".".join(str(part) for part in err.get("loc", ()))
        what = err.get("msg", "invalid")
        problems.append(f"{where}: {what}" if where else what)
    return "; ".join(problems) or "invalid request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, ErrorDetail(code="invalid_request", message=validation_message(exc.errors())))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after this handler, so uvicorn logs the traceback; the client only sees this.
    log.error("unexpected %s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
    return error_response(500, ErrorDetail(code="internal_error", message="internal server error"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)


# ImageError subclass → (HTTP status, error code); the base class maps to 422 invalid_image.
_IMAGE_ERRORS: tuple[tuple[type[imaging.ImageError], int, str], ...] = (
    (imaging.ImageTooLargeError, 413, "image_too_large"),
    (imaging.EmptyImageError, 422, "empty_file"),
    (imaging.TruncatedImageError, 422, "truncated_image"),
    (imaging.NotAnImageError, 415, "not_an_image"),
    (imaging.UnsupportedImageError, 415, "unsupported_format"),
)


def image_error_status(exc: imaging.ImageError) -> tuple[int, str]:
    """The HTTP status and error code for an image that cannot be read (uploads and live frames alike)."""
    return next(((s, c) for cls, s, c in _IMAGE_ERRORS if isinstance(exc, cls)), (422, "invalid_image"))
