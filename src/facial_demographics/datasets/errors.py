"""The data layer's expected failures: a dataset, cache or split file that is missing or unusable."""

from __future__ import annotations

from ..errors import UserError


class DataError(UserError, ValueError):
    """A dataset, face cache or split file is malformed or selects nothing; the message names the file.

    Also a ``ValueError``, so callers that caught ``ValueError`` keep working.
    """


class DataNotFoundError(DataError, FileNotFoundError):
    """A dataset, face cache or split file does not exist (also a ``FileNotFoundError``)."""
