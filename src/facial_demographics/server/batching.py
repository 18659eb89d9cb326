"""Micro-batching: images from concurrent requests share one ``analyze_batch`` call in a bounded thread pool.

Requests put decoded images on a bounded queue and await futures. A collector takes the first waiting
image, waits up to ``max_wait`` seconds for others (or until ``batch_size``), and runs the batch in a
thread so the event loop (``/healthz``, uploads) stays responsive. When ``max_queue`` images are already
waiting or running, new work is refused at once with :class:`QueueFullError` instead of piling up in memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..types import ImageResult

AnalyzeBatch = Callable[[list[np.ndarray]], Sequence[ImageResult]]


class QueueFullError(Exception):
    """Too much work waiting; ``retry_after`` is a rough estimate in whole seconds."""

    def __init__(self, pending: int, retry_after: int) -> None:
        super().__init__(f"{pending} images are already queued for analysis")
        self.pending = pending
        self.retry_after = retry_after


@dataclass
class _Item:
    image: np.ndarray
    future: asyncio.Future[ImageResult]


class MicroBatcher:
    """Batches images across requests; ``start()`` inside the event loop, ``stop()`` at exit."""

    def __init__(
        self,
        analyze_batch: AnalyzeBatch,
        *,
        batch_size: int = 16,
        max_wait: float = 0.005,
        max_queue: int = 64,
        threads: int = 1,
    ) -> None:
        if batch_size < 1 or max_queue < 1 or threads < 1 or max_wait < 0:
            raise ValueError("batch_size, max_queue and threads must be positive and max_wait non-negative")
        self._analyze = analyze_batch
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.threads = threads
        self._waiting: deque[_Item] = deque()
        self._pending = 0  # images waiting or being analysed
        self._seconds_per_image: float | None = None  # moving average, for Retry-After
        self._executor: ThreadPoolExecutor | None = None
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._arrived: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def running(self) -> bool:
        return self._collector is not None and not self._collector.done()

    async def start(self) -> None:
        if self.running:
            return
        self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="fd-inference")
        self._arrived, self._full = asyncio.Event(), asyncio.Event()
        self._slots = asyncio.Semaphore(self.threads)
        self._collector = asyncio.create_task(self._collect(), name="fd-batch-collector")

    async def stop(self) -> None:
        """Stop collecting, let running batches finish, fail whatever is still waiting."""
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
            self._collector = None
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while self._waiting:
            item = self._waiting.popleft()
            self._pending -= 1
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def retry_after(self) -> int:
        per_image = self._seconds_per_image or 1.0
        return max(1, min(60, math.ceil(self._pending * per_image / self.threads)))

    def check_capacity(self, count: int) -> None:
        """Raise QueueFullError if ``count`` more images do not fit (when idle, any request fits)."""
        if self._pending > 0 and self._pending + count > self.max_queue:
            raise QueueFullError(self._pending, self.retry_after())

    async def submit(self, images: Sequence[np.ndarray]) -> list[ImageResult]:
        """Analyse ``images``; results in the same order. Cancelling the caller drops its queued images."""
        if not self.running or self._arrived is None or self._full is None:
            raise RuntimeError("MicroBatcher.start() has not been called")
        self.check_capacity(len(images))
        loop = asyncio.get_running_loop()
        items = [_Item(image, loop.create_future()) for image in images]
        self._waiting.extend(items)
        self._pending += len(items)
        self._arrived.set()
        if len(self._waiting) >= self.batch_size:
            self._full.set()
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        finally:
            for item in items:  # on timeout/disconnect: queued ones are skipped by the collector
                if not item.future.done():
                    item.future.cancel()
                elif not item.future.cancelled():
                    item.future.exception()  # mark as retrieved: gather reports only the first failure

    async def _collect(self) -> None:
        assert self._arrived is not None and self._full is not None and self._slots is not None
        while True:
            await self._slots.acquire()
            try:
                while not self._waiting:
                    self._arrived.clear()
                    await self._arrived.wait()
                if len(self._waiting) < self.batch_size and self.max_wait > 0:
                    self._full.clear()
                    try:
                        await asyncio.wait_for(self._full.wait(), self.max_wait)
                    except asyncio.TimeoutError:
                        pass
                batch = self._take_batch()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._execute(batch))
            del batch  # else the last batch's images stay alive here until the next one (issue 34)
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        while self._waiting and len(batch) < self.batch_size:
            item = self._waiting.popleft()
            if item.future.done():  # its request timed out or went away
                self._pending -= 1
            else:
                batch.append(item)
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, self._analyze, [item.image for item in batch]
            )
            if len(results) != len(batch):
                raise RuntimeError(f"analyze_batch returned {len(results)} results for {len(batch)} images")
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
        else:
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
            per_image = (time.perf_counter() - started) / len(batch)
            previous = self._seconds_per_image
            self._seconds_per_image = per_image if previous is None else 0.8 * previous + 0.2 * per_image
        finally:
            self._pending -= len(batch)
            self._slots.release()
