"""The server's memory budget: bytes of uploads and decoded pixels that requests may hold at once.

A request reserves memory as it needs it: its body as the bytes arrive (never from the declared
Content-Length, so idle uploads hold nothing), its pixels from the image headers before decoding. It
waits a bounded time when the server is full, and releases everything when it ends. So memory stays
bounded whatever clients send, and a request that cannot get its share is refused with 503.

The budget counts what the process really holds, not only what was reserved: given ``resident`` (the
process's RSS), the baseline is its size when the budget starts (the models loaded), and a reservation
fits when ``max(reserved, RSS - baseline) + amount <= capacity``. Memory an estimate missed, or that the
allocator has not given back yet, so delays new work instead of adding to it, and peak RSS stays near
baseline + capacity. So that nothing waits forever on memory that will not come back, a reservation
made while nothing else is reserved only needs to fit the reservations.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

_MB = 2**20
#: How often a reservation held back by the process's RSS looks again (RSS falls without a release).
RECHECK = 0.05
#: A release at least this big asks ``reclaim`` to give freed memory back to the system.
RECLAIM_AFTER = 16 * _MB


def _mb(n: float) -> str:
    return f"{n / _MB:.0f}" if n >= 10 * _MB else f"{n / _MB:.2g}"


class BudgetFullError(Exception):
    """The reservation did not fit within the wait; ``retry_after`` is a rough estimate in whole seconds."""

    def __init__(self, wanted: int, used: int, capacity: int, waited: float, retry_after: int) -> None:
        super().__init__(
            f"{_mb(wanted)} MB of memory for uploads and images did not become free within {waited:g} s "
            f"({_mb(used)} of {_mb(capacity)} MB in use)"
        )
        self.retry_after = retry_after


class MemoryBudget:
    """A counting reservation of bytes, shared by all requests of one event loop; FIFO is not promised.

    Args:
        capacity: bytes all reservations (and the process beyond its baseline) may take.
        resident: the process's resident size in bytes (``memory.rss_bytes``); None: count reservations only.
        reclaim: called in a worker thread after a big release, to give freed memory back (``memory.trim``).
    """

    def __init__(self, capacity: int, resident: Callable[[], int] | None = None,
                 reclaim: Callable[[], object] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.used = 0
        self.resident = resident
        self.reclaim = reclaim
        self.baseline = 0
        self._changed: asyncio.Condition | None = None
        self._reclaiming: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Take the process's current size as its baseline (call it once the models are loaded)."""
        if self.resident is not None:
            self.baseline = self.resident()

    def beyond_baseline(self) -> int:
        """Bytes the process holds beyond its baseline (0 without ``resident``)."""
        return max(0, self.resident() - self.baseline) if self.resident is not None else 0

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # created lazily, inside the running loop
            self._changed = asyncio.Condition()
        return self._changed

    def _fits(self, amount: int) -> bool:
        if self.used + amount > self.capacity:
            return False
        return self.used == 0 or self.resident is None or self.beyond_baseline() + amount <= self.capacity

    async def acquire(self, amount: int, timeout: float) -> None:
        """Reserve ``amount`` bytes, waiting up to ``timeout`` seconds for others to release theirs.

        Raises:
            ValueError: ``amount`` is larger than the whole budget (it could never fit).
            BudgetFullError: it did not fit within ``timeout``.
        """
        if amount > self.capacity:
            raise ValueError(f"{amount} bytes is over the whole budget of {self.capacity}")
        if amount <= 0:
            return
        changed = self._condition()
        deadline = time.monotonic() + timeout
        async with changed:
            while not self._fits(amount):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BudgetFullError(amount, max(self.used, self.beyond_baseline()), self.capacity, timeout,
                                          self._retry_after(timeout))
                held_by_rss = self.used + amount <= self.capacity
                if held_by_rss:
                    self._start_reclaim()
                try:
                    await asyncio.wait_for(changed.wait(), min(left, RECHECK) if held_by_rss else left)
                except asyncio.TimeoutError:
                    pass
            self.used += amount

    async def release(self, amount: int) -> None:
        if amount <= 0:
            return
        changed = self._condition()
        async with changed:
            self.used = max(0, self.used - amount)
            changed.notify_all()
        if amount >= RECLAIM_AFTER:
            self._start_reclaim()

    def _start_reclaim(self) -> None:
        """Run ``reclaim`` in a worker thread unless it is running already; waiters are told when it is done."""
        if self.reclaim is None or (self._reclaiming is not None and not self._reclaiming.done()):
            return
        reclaim, changed = self.reclaim, self._condition()

        async def run() -> None:
            await asyncio.to_thread(reclaim)
            async with changed:
                changed.notify_all()

        self._reclaiming = asyncio.get_running_loop().create_task(run())

    @asynccontextmanager
    async def hold(self, amount: int, timeout: float) -> AsyncIterator[None]:
        """``acquire`` for the duration of a ``with`` block (released on any exit, cancellation included)."""
        await self.acquire(amount, timeout)
        try:
            yield
        finally:
            await asyncio.shield(self.release(amount))

    @asynccontextmanager
    async def growing(self, timeout: float) -> AsyncIterator[Reservation]:
        """A :class:`Reservation` that starts empty and grows; all of it is released on any exit."""
        reservation = Reservation(self, timeout)
        try:
            yield reservation
        finally:
            await asyncio.shield(self.release(reservation.held))

    @staticmethod
    def _retry_after(waited: float) -> int:
        return max(1, min(60, math.ceil(waited)))


class Reservation:
    """Memory one request holds, grown as it needs more (body bytes as they arrive, then pixels)."""

    def __init__(self, budget: MemoryBudget, timeout: float) -> None:
        self.budget = budget
        self.timeout = timeout
        self.held = 0

    async def grow_to(self, total: int) -> None:
        """Hold at least ``total`` bytes (waiting for the difference, as ``MemoryBudget.acquire``)."""
        if total > self.held:
            await self.budget.acquire(total - self.held, self.timeout)
            self.held = total

    async def grow(self, amount: int) -> None:
        await self.grow_to(self.held + amount)
