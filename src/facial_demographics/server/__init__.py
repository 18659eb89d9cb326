"""Web app and REST API (needs the ``serve`` extra: FastAPI, uvicorn, python-multipart)."""

from .app import create_app
from .serve import running_server, serve_command
from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "running_server", "serve_command"]
