"""The one base class for expected failures.

A :class:`UserError` is something the user can fix: a missing file, a bad value, a bundle that does not
load. The CLI prints its message on one line and exits with code 2; anything else is a bug and keeps its
traceback. Each module's error subclasses it (``ImageError``, ``BundleError``, ``ConfigError``, ...); they
stay ``ValueError`` subclasses as well, so callers that caught ``ValueError`` keep working.
"""

from __future__ import annotations


class UserError(Exception):
    """An expected failure with a message meant for the user (the CLI exits 2 without a traceback)."""


class InvalidValueError(UserError, ValueError):
    """A value the user chose (an option, a setting, a selection) is out of range or selects nothing."""
