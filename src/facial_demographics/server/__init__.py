"""Web app and REST API (needs the ``serve`` extra: FastAPI, uvicorn, python-multipart).

The names below load on first use, so ``server.settings`` (which the CLI reads to build the ``serve``
options) imports without FastAPI: the core install's CLI works, and ``analyze`` does not carry FastAPI's
~30 MiB and 0.4 s of imports.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .serve import running_server, serve_command
    from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "running_server", "serve_command"]
_HOMES = {"create_app": ".app", "running_server": ".serve", "serve_command": ".serve", "ServerSettings": ".settings"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name], __name__), name)
