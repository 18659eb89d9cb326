"""uvicorn's h11 protocol with a header timeout, so clients that connect and send nothing are dropped.

uvicorn times out idle keep-alive connections only after a response, and its ``limit_concurrency``
counts connections: 1,000 connections that never send a request line would be held forever and make
every real client get 503. Here each connection must complete its request headers within the header
timeout, counted from the connection (and again from the end of each response); the slow *body* is
the app's ``request_timeout``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Key of the lifespan state (the app yields it) that carries the header timeout in seconds.
HEADER_TIMEOUT_STATE = "fd_header_timeout"
DEFAULT_HEADER_TIMEOUT = 10.0


class HeaderTimeoutH11Protocol(H11Protocol):
    """``H11Protocol`` plus a timer that closes the connection when request headers are not complete in time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _header_timeout(self) -> float:
        return float(self.app_state.get(HEADER_TIMEOUT_STATE, DEFAULT_HEADER_TIMEOUT))

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._header_timeout(), self._on_header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the request's headers are in: the app times the rest
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
