"""Server settings: one frozen dataclass, passed to ``create_app`` and (as JSON) to extra worker processes."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import UserError
from ..imaging import DEFAULT_MAX_PIXELS
from ..runtime import DEVICES

#: Environment variable read when ``api_key`` is not given explicitly.
API_KEY_ENV = "FD_API_KEY"
#: Environment variable through which ``serve`` hands the settings to uvicorn worker processes.
SETTINGS_ENV = "FD_SERVER_SETTINGS"

_MB = 1024 * 1024


class SettingsError(UserError, ValueError):
    """A server setting is unknown or out of range; the message names it."""


def _setting(default: Any, help: str, *, cli: str | None = None, scale: int = 1) -> Any:
    """A settings field with its command-line form: the option name (default: the field's) and the factor
    from the option's unit to the field's (megabytes → bytes). ``serve`` builds its options from these."""
    return field(default=default, metadata={"help": help, "cli": cli, "scale": scale})


@dataclass(frozen=True)
class ServerSettings:
    """Everything the web app needs; defaults are safe for a local, single-user server.

    This is the one place for the serve options: ``facial-demographics serve`` has one option per field
    (named after it, or after its ``cli`` form), each also read from ``$FD_<OPTION>`` (``FD_API_KEY``,
    ``FD_MAX_FILES``, ...).
    """

    host: str = _setting("127.0.0.1", "Address to bind; other than loopback exposes the server.")
    port: int = _setting(8000, "TCP port.")
    workers: int = _setting(1, "Server processes (each loads the model).")
    model: str | None = _setting(None, "Model: default | fast | fp32 | seed, or a bundle directory (GET /v1/models "
                                 "lists them).")
    device: str = _setting("auto", "Where the networks run: auto | cpu | cuda (auto: a CUDA GPU when "
                           "onnxruntime-gpu and a GPU are present).")
    max_upload_bytes: int = _setting(10 * _MB, "Largest request body (all files together), in MB.",
                                     cli="max_upload_mb", scale=_MB)
    max_pixels: int = _setting(DEFAULT_MAX_PIXELS, "Largest image, in pixels (checked from the header).")
    max_files: int = _setting(16, "Files per request.")
    api_key: str | None = _setting(None, "Require this key (X-API-Key or Bearer) on /v1/*.")
    cors_origins: tuple[str, ...] = _setting((), "Allow this browser origin (repeatable); off by default.",
                                             cli="cors_origin")
    request_timeout: float = _setting(30.0, "Seconds for an upload, and for its analysis.")
    max_queue: int = _setting(64, "Images waiting for or in inference before new requests get 503.")
    batch_size: int = _setting(16, "Images per model batch across requests.")
    batch_wait_ms: float = _setting(5.0, "Milliseconds the first queued image waits for company.")
    inference_threads: int = _setting(1, "Concurrent model batches.")
    # Memory: uploads are reserved against these as their bytes arrive, decoded pixels before decoding
    # (see budget.py; imaging.ImageHeader.decode_bytes estimates a picture's peak). The server total is
    # what the process may hold beyond its size with the models loaded (~0.2 GB): peak RSS stays under
    # about baseline + server_memory (memory.py gives freed memory back). The request limit admits one
    # image at max_pixels (50 MP of 8-bit RGB peak at ~700 MB).
    request_memory_bytes: int = _setting(768 * _MB, "Memory one request's upload and decoded images may use, "
                                         "in MB (more: 413).", cli="request_memory_mb", scale=_MB)
    server_memory_bytes: int = _setting(1024 * _MB, "Memory the server may use beyond its size with the model "
                                        "loaded, for all requests' uploads and decoded images, in MB (full: wait, "
                                        "then 503).", cli="server_memory_mb", scale=_MB)
    memory_wait: float = _setting(5.0, "Seconds a request may wait for memory before 503 + Retry-After.")
    annotate_max_side: int = _setting(1280, "Annotated images in responses are downscaled to this side.")
    max_annotated_bytes: int = _setting(8 * _MB, "Annotated images per response, in MB; more are left out "
                                        "with a note.", cli="max_annotated_mb", scale=_MB)
    # Slow, idle and greedy clients: see protocol.py.
    header_timeout: float = _setting(10.0, "Seconds a client has to send complete request headers.")
    timeout_keep_alive: float = _setting(5.0, "Seconds an idle keep-alive connection is kept.")
    max_connections: int = _setting(1024, "Open connections in all; at the cap a new one replaces the "
                                    "longest idle or stalled one (none: 503).")
    max_client_connections: int = _setting(128, "Open connections from one client address (as max_connections, "
                                           "per address; behind a proxy, all come from the proxy's).")
    max_header_bytes: int = _setting(16 * 1024, "Largest request line plus headers, in bytes (more: 431).")

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
            "max_connections",
            "max_client_connections",
            "max_header_bytes",
        )
        for name in positive + ("inference_threads",):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SettingsError(f"{name} must be a positive integer, got {value!r}")
        if self.port > 65535:
            raise SettingsError(f"port must be at most 65535, got {self.port}")
        for name in ("request_timeout", "memory_wait", "header_timeout", "timeout_keep_alive"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name} must be positive, got {getattr(self, name)}")
        # So that every reservation fits the whole budget (a request's body is reserved from both).
        if not self.max_upload_bytes <= self.request_memory_bytes <= self.server_memory_bytes:
            raise SettingsError("need max_upload_bytes <= request_memory_bytes <= server_memory_bytes")
        if self.device not in DEVICES:
            raise SettingsError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.batch_wait_ms < 0:
            raise SettingsError(f"batch_wait_ms must not be negative, got {self.batch_wait_ms}")
        if self.api_key is not None and not self.api_key.strip():
            raise SettingsError("api_key must not be empty (leave it unset to disable authentication)")
        if "*" in self.cors_origins and len(self.cors_origins) > 1:
            raise SettingsError("cors_origins: '*' allows every origin and cannot be combined with others")

    @classmethod
    def create(cls, **values: Any) -> ServerSettings:
        """Build settings from command-line values: options in their CLI units (``max_upload_mb``), lists
        for repeatable ones, ``None`` for "not given" (the field's default), ``$FD_API_KEY`` as fallback.

        Raises:
            ValueError: an unknown option, or a value out of range (naming it).
        """
        # A field is accepted by its option name (in the option's unit) or by its own name (as is).
        by_name = {f.name: (f, 1) for f in fields(cls)}
        by_name.update({f.metadata["cli"]: (f, f.metadata["scale"]) for f in fields(cls) if f.metadata.get("cli")})
        unknown = set(values) - set(by_name)
        if unknown:
            raise SettingsError(f"unknown server settings: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            f, scale = by_name[name]
            if value is None:
                continue
            if scale != 1:
                if not value > 0:
                    raise SettingsError(f"{name} must be positive, got {value}")
                value = int(value * scale)
            kwargs[f.name] = value
        kwargs["api_key"] = kwargs.get("api_key") or os.environ.get(API_KEY_ENV) or None
        if kwargs.get("model") is not None:
            kwargs["model"] = str(kwargs["model"])  # a registry name or a path (see registry.resolve)
        if "cors_origins" in kwargs:
            kwargs["cors_origins"] = tuple(o.strip().rstrip("/") for o in kwargs["cors_origins"] if o.strip())
        return cls(**kwargs)

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
            raise SettingsError(f"unknown server settings: {sorted(unknown)}")
        data["cors_origins"] = tuple(data.get("cors_origins") or ())
        return cls(**data)
