"""Run the app with uvicorn: ``serve_command`` for the CLI, ``running_server`` for tests and benchmarks."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI

from .app import create_app, load_analyzer
from .memory import tune_allocator
from .protocol import REFUSED_SLACK, GuardedH11Protocol
from .settings import SETTINGS_ENV, ServerSettings

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """uvicorn settings against slow and idle clients, from ``ServerSettings`` (the one source).

    uvicorn's ``limit_concurrency`` stays off: it counts connections, so slow ones blocked everyone; the
    protocol's guard caps connections per address and in all instead (protocol.py).
    """
    return {
        "http": GuardedH11Protocol,
        "timeout_keep_alive": settings.timeout_keep_alive,
        "limit_concurrency": None,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": 10,
    }


def serve_command(settings: ServerSettings, log_level: str = "info") -> None:
    """Serve the web page and the REST API until interrupted (blocks).

    The model is loaded before the port opens, so a bad bundle fails here with its reason. Each of
    ``settings.workers`` processes loads its own copy of the model.

    Raises:
        BundleError: the model bundle cannot be loaded or run.
    """
    import uvicorn

    tune_allocator()
    raise_open_files(settings.max_connections + REFUSED_SLACK + 256)
    if not is_loopback(settings.host) and settings.api_key is None:
        log.warning("listening on %s without an API key: anyone who can reach this port can use it",
                    settings.host)
    target: FastAPI | str
    if settings.workers == 1:
        target = create_app(settings, analyzer=load_analyzer(settings))
    else:
        from ..model import AgeGenderModel

        # Fail fast on a bad bundle before starting workers.
        AgeGenderModel(settings.model, device=settings.device).warm_up()
        os.environ[SETTINGS_ENV] = settings.to_json()
        target = f"{__name__}:app_from_env"
    uvicorn.run(
        target,
        factory=settings.workers > 1,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        **uvicorn_options(settings),
    )


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes: settings come from $FD_SERVER_SETTINGS."""
    text = os.environ.get(SETTINGS_ENV)
    if not text:
        raise RuntimeError(f"${SETTINGS_ENV} is not set; start the server with `facial-demographics serve`")
    tune_allocator()
    return create_app(ServerSettings.from_json(text))


def raise_open_files(wanted: int) -> None:
    """Raise the soft limit on open files towards ``wanted`` (up to the hard limit), so that the connection
    caps, not the file limit, decide; warn when the hard limit is lower."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    if target < wanted:
        log.warning("open files are limited to %d: lower --max-connections below that (or raise `ulimit -n`)",
                    target)


@contextmanager
def running_server(
    app: FastAPI,
    host: str = "127.0.0.1",
    log_level: str = "warning",
    startup_timeout: float = 60.0,
    settings: ServerSettings | None = None,
) -> Iterator[str]:
    """Run ``app`` on a free port of ``host`` in a background thread; yields the base URL, stops on exit.

    ``settings`` gives the uvicorn options (as ``serve`` uses them); pass the app's own.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    options = uvicorn_options(settings or ServerSettings())
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on", **options))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="fd-test-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server stopped during startup (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {startup_timeout} s")
            time.sleep(0.02)
        yield f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
