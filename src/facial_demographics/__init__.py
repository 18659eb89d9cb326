"""facial-demographics: find every face in a photo and estimate its age (with an interval) and gender.

The public API is ``FaceAnalyzer`` (imported lazily so ``import facial_demographics`` stays light and
never loads torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.4.0"
__all__ = ["FaceAnalyzer", "__version__"]

if TYPE_CHECKING:
    from .pipeline import FaceAnalyzer


def __getattr__(name: str) -> Any:
    if name == "FaceAnalyzer":
        from .pipeline import FaceAnalyzer

        return FaceAnalyzer
    raise AttributeError(f"module 'facial_demographics' has no attribute {name!r}")
