"""How long-running domain functions report progress without printing: the caller passes a factory.

A :data:`ProgressFactory` is called with a description and a total and returns a context manager that
yields ``advance(n)``. The CLI passes a bar (or periodic lines in a log); library callers get
:func:`no_progress` by default, so domain code never writes to the terminal itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

Advance = Callable[[int], None]
ProgressFactory = Callable[[str, int], AbstractContextManager[Advance]]


@contextmanager
def no_progress(description: str, total: int) -> Iterator[Advance]:
    """The silent default."""
    yield lambda n: None
