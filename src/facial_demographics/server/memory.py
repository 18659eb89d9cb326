"""The server process's memory: its resident size, and giving freed memory back to the system.

glibc's malloc keeps freed memory for reuse: after a burst of big decodes the server sat at 987 MiB
with nothing in flight (issue 34). Two settings and one call fix that:

- ``M_MMAP_THRESHOLD`` fixed at 32 MiB: decoded pictures and their conversions are their own mappings
  and go back to the system when freed (by default the threshold moves with what was freed last). Not
  lower: at 1 MiB every ONNX Runtime activation was a fresh mapping and inference took twice as long;
- ``M_ARENA_MAX`` 4: the decode and inference threads share four heaps instead of one each;
- ``malloc_trim(0)`` after a big request ends (at most every ``TRIM_EVERY`` seconds): the free pages
  inside the heaps go back too.

Nothing here changes what the program computes; on a system without glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 32 << 20
ARENA_MAX = 4
#: Seconds between two ``malloc_trim`` calls at most.
TRIM_EVERY = 0.5

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_lock = threading.Lock()
_state: dict[str, object] = {"libc": None, "tuned": False, "last_trim": 0.0}


def _libc() -> ctypes.CDLL | None:
    if _state["libc"] is None:
        try:
            loaded = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            loaded.malloc_trim  # noqa: B018 - glibc only
            loaded.mallopt  # noqa: B018
        except (OSError, AttributeError):
            _state["libc"] = False
        else:
            _state["libc"] = loaded
    found = _state["libc"]
    return found if isinstance(found, ctypes.CDLL) else None


def tune_allocator() -> bool:
    """Set the allocator up to give big buffers back (once per process); False without glibc."""
    libc = _libc()
    if libc is None:
        return False
    with _lock:
        if not _state["tuned"]:
            ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(_M_ARENA_MAX, ARENA_MAX) == 1
            if not ok:
                log.warning("mallopt refused the server's memory settings; freed memory may not be given back")
            _state["tuned"] = True
    return True


def trim(force: bool = False) -> bool:
    """Give the free pages of every heap back to the system (``malloc_trim``); True when it ran.

    Rate-limited to one call per ``TRIM_EVERY`` seconds unless ``force``. Call it off the event loop:
    it walks the heaps (a few milliseconds after a burst).
    """
    libc = _libc()
    if libc is None:
        return False
    now = time.monotonic()
    with _lock:
        if not force and now - float(_state["last_trim"]) < TRIM_EVERY:  # type: ignore[arg-type]
            return False
        _state["last_trim"] = now
    libc.malloc_trim(0)
    return True


def rss_bytes() -> int:
    """This process's resident set size, in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0
