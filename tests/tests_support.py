"""Small helpers shared by several test files."""

from __future__ import annotations

import shutil
from pathlib import Path


def copy_bundle(bundle: Path, target: Path) -> Path:
    """A private copy of a bundle that a test may modify."""
    shutil.copytree(bundle, target)
    return target
