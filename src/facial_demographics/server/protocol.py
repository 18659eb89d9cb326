"""uvicorn's h11 protocol with a connection guard: slow, idle and greedy clients cannot block the server.

uvicorn's own ``limit_concurrency`` counts *connections*, so 200 sockets that trickle header lines (or
never send one) made every real request, ``/healthz`` included, get a plain-text 503. Here:

- a connection must complete its request headers within the header timeout, counted from the connection
  (and again from the end of each response); a slow *body* is the app's ``request_timeout``;
- connections are capped per client address (``max_client_connections``) and in all (``max_connections``).
  When a cap is reached the new connection takes the place of the one that has waited longest without a
  request (headers not complete, or kept alive between requests), else of an upload that has stalled (no
  body bytes for ``STALLED_AFTER`` s); requests being received or worked on are never cut. Only when every
  connection is working does the new one get a JSON 503 with Retry-After, except ``/healthz``, which is
  always answered;
- the request line plus headers may have at most ``max_header_bytes`` (h11 bounds only an incomplete
  header block, so a bigger one arriving in one read was accepted): more gets a JSON 431.

The guard lives in the app's lifespan state (``GUARD_STATE``), so ``serve`` and the tests' ``running_server``
use the same settings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

#: Key of the lifespan state (the app yields it) that carries the :class:`ConnectionGuard`.
GUARD_STATE = "fd_connection_guard"
#: An upload that sent no body bytes for this long may be cut to make room for a new connection.
STALLED_AFTER = 2.0
#: Connections beyond the caps that are kept only to answer 503 (or /healthz); more are closed at once.
REFUSED_SLACK = 64
#: Seconds a connection refused for being over a cap has to send its request.
REFUSED_HEADER_TIMEOUT = 2.0

#: Header timeout when the app did not put a guard in its lifespan state.
DEFAULT_HEADER_TIMEOUT = 10.0


class ConnectionGuard:
    """Open connections per client address and in all, the caps, and who makes room when one is reached.

    Args:
        max_connections: connections in all.
        max_client_connections: connections from one client address.
        header_timeout: seconds a connection has to send complete request headers.
        max_header_bytes: the request line plus headers, at most.
    """

    def __init__(self, max_connections: int, max_client_connections: int, header_timeout: float,
                 max_header_bytes: int) -> None:
        self.max_connections = max_connections
        self.max_client_connections = max_client_connections
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self.open: dict[GuardedH11Protocol, None] = {}
        self.by_client: dict[str, dict[GuardedH11Protocol, None]] = {}
        # Connections without a request in progress, the longest waiting first (all, and per address).
        self.waiting: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self.waiting_by_client: dict[str, OrderedDict[GuardedH11Protocol, None]] = {}
        self.refused_open = 0
        self.counts = {"evicted": 0, "refused": 0, "header_timeouts": 0, "headers_too_large": 0}

    # -- bookkeeping ------------------------------------------------------------------------------------
    def admit(self, conn: GuardedH11Protocol) -> bool:
        """Count a new connection, making room when a cap is reached; False when nothing could make room."""
        host = conn.client_host
        mine = self.by_client.get(host, {})
        if len(mine) >= self.max_client_connections and not self._evict(host):
            return False
        if len(self.open) >= self.max_connections and not self._evict(None):
            return False
        self.open[conn] = None
        self.by_client.setdefault(host, {})[conn] = None
        return True

    def leave(self, conn: GuardedH11Protocol) -> None:
        if conn in self.open:
            del self.open[conn]
            host = conn.client_host
            mine = self.by_client.get(host)
            if mine is not None:
                mine.pop(conn, None)
                if not mine:
                    del self.by_client[host]
        self.idle_ends(conn)

    def idle_begins(self, conn: GuardedH11Protocol) -> None:
        """``conn`` waits for a request (new, or kept alive after a response)."""
        if conn in self.open:
            self.waiting[conn] = None
            self.waiting_by_client.setdefault(conn.client_host, OrderedDict())[conn] = None

    def idle_ends(self, conn: GuardedH11Protocol) -> None:
        self.waiting.pop(conn, None)
        mine = self.waiting_by_client.get(conn.client_host)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self.waiting_by_client[conn.client_host]

    def _evict(self, host: str | None) -> bool:
        """Close the longest-waiting idle connection (of ``host``, or of anyone), else a stalled upload."""
        waiting = self.waiting if host is None else self.waiting_by_client.get(host, OrderedDict())
        victim = next(iter(waiting), None)
        if victim is None:
            now = time.monotonic()
            pool = self.open if host is None else self.by_client.get(host, {})
            stalled = [c for c in pool if c.stalled_since(now) >= STALLED_AFTER]
            victim = min(stalled, key=lambda c: c.last_progress, default=None)
        if victim is None:
            return False
        self.counts["evicted"] += 1
        self.leave(victim)
        victim.drop()
        return True

    def snapshot(self) -> dict[str, int]:
        return {"open": len(self.open), "waiting": len(self.waiting), "clients": len(self.by_client),
                "refused_open": self.refused_open, **self.counts}


class _LimitedConnection(h11.Connection):
    """h11's connection that refuses a request whose line plus headers exceed ``max_header_bytes``."""

    def __init__(self, max_header_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self.max_header_bytes = max_header_bytes
        self.error_status = 400

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error_status = exc.error_status_hint
            raise
        if isinstance(event, h11.Request):
            size = len(event.method) + len(event.target) + 12 + sum(
                len(name) + len(value) + 4 for name, value in event.headers.raw_items())
            if size > self.max_header_bytes:
                self.error_status = 431
                raise h11.RemoteProtocolError("request header fields too large", error_status_hint=431)
        return event


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """The answer on a connection over a cap when nothing could make room for it."""
    body = json.dumps({"error": {"code": "server_busy", "message": "too many connections from this address or "
                                 "in all; retry later", "item": None}, "errors": []}).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _refusing(app: Any) -> Any:
    """``app`` for health checks, :func:`_busy` for everything else."""

    async def refusing(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/healthz" and scope["method"] in ("GET", "HEAD"):
            await app(scope, receive, send)
        else:
            await _busy(scope, receive, send)

    return refusing


class GuardedH11Protocol(H11Protocol):
    """``H11Protocol`` plus the guard's caps, a header timeout, a header size limit and JSON 4xx answers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard: ConnectionGuard | None = self.app_state.get(GUARD_STATE)
        if self.guard is not None:
            self.conn = _LimitedConnection(self.guard.max_header_bytes)
        self.client_host = ""
        self.refused = False
        self.last_progress = time.monotonic()
        self._header_timer: asyncio.TimerHandle | None = None

    # -- state for the guard ------------------------------------------------------------------------------
    def stalled_since(self, now: float) -> float:
        """Seconds since the last body bytes of an upload still being received; 0 when not receiving one."""
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_started or self.conn.their_state is not h11.SEND_BODY:
            return 0.0
        return now - self.last_progress

    def drop(self) -> None:
        """Close the connection to make room for another."""
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()

    # -- the header timer ---------------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(seconds, self._on_header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self.guard is not None:
                self.guard.counts["header_timeouts"] += 1
            self.transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.client_host = self.client[0] if self.client else ""
        guard = self.guard
        if guard is None or guard.admit(self):
            self.idle_again()
            return
        guard.counts["refused"] += 1
        if guard.refused_open >= REFUSED_SLACK:
            transport.close()
            return
        self.refused = True
        guard.refused_open += 1
        self.app = _refusing(self.app)
        self._arm(REFUSED_HEADER_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.guard is not None:
            if self.refused:
                self.refused = False
                self.guard.refused_open -= 1
            self.guard.leave(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.last_progress = time.monotonic()
        super().data_received(data)

    def handle_events(self) -> None:
        waiting = self.conn.their_state is h11.IDLE
        super().handle_events()
        if waiting and self.conn.their_state is not h11.IDLE:  # the request's headers are in
            self._disarm()
            if self.guard is not None:
                self.guard.idle_ends(self)

    def on_response_complete(self) -> None:
        if self.refused:  # one answer (503, or a health check) per refused connection
            self.server_state.total_requests += 1
            self.transport.close()
            return
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.idle_again()

    def idle_again(self) -> None:
        if self.guard is not None:
            self.guard.idle_begins(self)
        self._arm(self.guard.header_timeout if self.guard is not None else DEFAULT_HEADER_TIMEOUT)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a malformed request, as JSON, with h11's status (431 for headers too large)."""
        status = getattr(self.conn, "error_status", 400)
        if status == 431:
            if self.guard is not None:
                self.guard.counts["headers_too_large"] += 1
            code, message = "headers_too_large", "the request line and headers are over the server's limit"
        else:
            status, code, message = 400, "bad_request", "malformed HTTP request"
        body = json.dumps({"error": {"code": code, "message": message, "item": None}, "errors": []}).encode()
        try:
            response = h11.Response(status_code=status, reason=b"", headers=[
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close")])
            self.transport.write(self.conn.send(response) or b"")
            self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # a response had already started: nothing more can be said
            pass
        self.transport.close()
