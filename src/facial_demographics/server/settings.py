"""Server settings: one frozen dataclass, passed to ``create_app`` and (as JSON) to extra worker processes."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

#: Environment variable read when ``api_key`` is not given explicitly.
API_KEY_ENV = "FD_API_KEY"
#: Environment variable through which ``serve`` hands the settings to uvicorn worker processes.
SETTINGS_ENV = "FD_SERVER_SETTINGS"

_MB = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """Everything the web app needs; defaults are safe for a local, single-user server."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # uvicorn processes; each loads its own model
    model: Path | None = None  # model bundle directory; None = the packaged default
    max_upload_bytes: int = 10 * _MB  # per request, all files together
    max_pixels: int = 50_000_000  # per image, after decoding the header
    max_files: int = 16  # per request
    api_key: str | None = None  # when set, /v1/* needs X-API-Key or Authorization: Bearer
    cors_origins: tuple[str, ...] = ()  # empty = CORS off
    request_timeout: float = 30.0  # seconds, for reading the upload and for the analysis each
    max_queue: int = 64  # images waiting for or in inference; beyond that new requests get 503
    batch_size: int = 16  # images per analyze_batch call
    batch_wait_ms: float = 5.0  # how long the first queued image waits for company
    inference_threads: int = 1  # concurrent analyze_batch calls
    # Memory: uploads and decoded pixels are reserved against these before they are read or decoded
    # (see budget.py; imaging.ImageHeader.decode_bytes estimates a picture's peak). The request limit
    # admits one image at max_pixels (50 MP of 8-bit RGB peak at ~700 MB); the server total keeps a
    # 2-core, few-GB machine under ~1.5 GB with the models loaded (~0.5 GB).
    request_memory_bytes: int = 768 * _MB  # one request's uploads + decoded images; more → 413
    server_memory_bytes: int = 1024 * _MB  # all requests together; full → wait, then 503
    memory_wait: float = 5.0  # seconds a request may wait for its share before 503 + Retry-After
    annotate_max_side: int = 1280  # annotated images in responses are downscaled to this, as JPEG
    max_annotated_bytes: int = 8 * _MB  # per response; further annotated images are left out with a note
    # Slow or idle clients (uvicorn/h11): see serve.py.
    header_timeout: float = 10.0  # seconds from connection (or end of response) to complete request headers
    timeout_keep_alive: float = 5.0  # seconds an idle keep-alive connection is kept
    limit_concurrency: int = 128  # connections + tasks; above it uvicorn answers 503
    max_header_bytes: int = 16 * 1024  # h11_max_incomplete_event_size: largest request line + headers

    def __post_init__(self) -> None:
        positive = (
            "port",
            "workers",
            "max_upload_bytes",
            "max_pixels",
            "max_files",
            "max_queue",
            "batch_size",
            "request_memory_bytes",
            "server_memory_bytes",
            "annotate_max_side",
            "max_annotated_bytes",
            "limit_concurrency",
            "max_header_bytes",
        )
        for name in positive + ("inference_threads",):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.port > 65535:
            raise ValueError(f"port must be at most 65535, got {self.port}")
        for name in ("request_timeout", "memory_wait", "header_timeout", "timeout_keep_alive"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        # So that every reservation fits the whole budget (a request's body is reserved from both).
        if not self.max_upload_bytes <= self.request_memory_bytes <= self.server_memory_bytes:
            raise ValueError("need max_upload_bytes <= request_memory_bytes <= server_memory_bytes")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must not be negative, got {self.batch_wait_ms}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty (leave it unset to disable authentication)")
        if "*" in self.cors_origins and len(self.cors_origins) > 1:
            raise ValueError("cors_origins: '*' allows every origin and cannot be combined with others")

    @classmethod
    def create(
        cls,
        *,
        max_upload_mb: float = 10,
        cors_origins: list[str] | tuple[str, ...] | None = None,
        **kwargs: Any,
    ) -> ServerSettings:
        """Build settings from CLI-style values (megabytes, optional lists, FD_API_KEY fallback)."""
        if not max_upload_mb > 0:
            raise ValueError(f"max_upload_mb must be positive, got {max_upload_mb}")
        kwargs["api_key"] = kwargs.get("api_key") or os.environ.get(API_KEY_ENV) or None
        if kwargs.get("model") is not None:
            kwargs["model"] = Path(kwargs["model"])
        origins = tuple(o.strip().rstrip("/") for o in cors_origins or () if o.strip())
        return cls(max_upload_bytes=int(max_upload_mb * _MB), cors_origins=origins, **kwargs)

    def to_json(self) -> str:
        data = asdict(self)
        data["model"] = None if self.model is None else str(self.model)
        data["cors_origins"] = list(self.cors_origins)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ServerSettings:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown server settings: {sorted(unknown)}")
        if data.get("model") is not None:
            data["model"] = Path(data["model"])
        data["cors_origins"] = tuple(data.get("cors_origins") or ())
        return cls(**data)
