"""The ``facial-demographics`` entry point; the commands live in :mod:`facial_demographics.commands`."""

from __future__ import annotations

from .commands import app
from .inputs import IMAGE_SUFFIXES, InputScan, expand_inputs

__all__ = ["app", "expand_inputs", "InputScan", "IMAGE_SUFFIXES"]
