"""The server's memory budget: bytes of uploads and decoded pixels that requests may hold at once.

A request reserves what it will need before it needs it (its body from Content-Length before reading
it, its pixels from the image headers before decoding), waits a bounded time when the server is full,
and releases everything when it ends. So memory stays bounded whatever clients send, and a request
that cannot get its share is refused with 503 instead of piling up.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class BudgetFullError(Exception):
    """The reservation did not fit within the wait; ``retry_after`` is a rough estimate in whole seconds."""

    def __init__(self, wanted: int, used: int, capacity: int, retry_after: int) -> None:
        super().__init__(
            f"{wanted / 2**20:.0f} MB of image memory did not become free in time "
            f"({used / 2**20:.0f} of {capacity / 2**20:.0f} MB in use)"
        )
        self.retry_after = retry_after


class MemoryBudget:
    """A counting reservation of bytes, shared by all requests of one event loop; FIFO is not promised."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.used = 0
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # created lazily, inside the running loop
            self._changed = asyncio.Condition()
        return self._changed

    async def acquire(self, amount: int, timeout: float) -> None:
        """Reserve ``amount`` bytes, waiting up to ``timeout`` seconds for others to release theirs.

        Raises:
            ValueError: ``amount`` is larger than the whole budget (it could never fit).
            BudgetFullError: it did not fit within ``timeout``.
        """
        if amount > self.capacity:
            raise ValueError(f"{amount} bytes is over the whole budget of {self.capacity}")
        changed = self._condition()
        async with changed:
            try:
                await asyncio.wait_for(changed.wait_for(lambda: self.used + amount <= self.capacity), timeout)
            except asyncio.TimeoutError:
                raise BudgetFullError(amount, self.used, self.capacity, self._retry_after(timeout)) from None
            self.used += amount

    async def release(self, amount: int) -> None:
        changed = self._condition()
        async with changed:
            self.used = max(0, self.used - amount)
            changed.notify_all()

    @asynccontextmanager
    async def hold(self, amount: int, timeout: float) -> AsyncIterator[None]:
        """``acquire`` for the duration of a ``with`` block (released on any exit, cancellation included)."""
        await self.acquire(amount, timeout)
        try:
            yield
        finally:
            await asyncio.shield(self.release(amount))

    @staticmethod
    def _retry_after(waited: float) -> int:
        return max(1, min(60, math.ceil(waited)))
