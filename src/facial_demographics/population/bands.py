"""Age bands for population summaries: parsed once from ``"13,18,25,35,45,55,65"`` or a preset name."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidValueError
from ..labels import AUDIENCE_BAND_EDGES, BAND_PRESETS, MAX_AGE


@dataclass(frozen=True)
class AgeBands:
    """Contiguous whole-year bands from 0 to ``MAX_AGE``: ``edges`` are the first age of each band after
    the first, so ``(13, 18)`` gives ``0-12``, ``13-17`` and ``18+``."""

    edges: tuple[int, ...] = AUDIENCE_BAND_EDGES

    def __post_init__(self) -> None:
        e = self.edges
        if not e:
            raise InvalidValueError("bands: give at least one edge, e.g. 13,18,25,35,45,55,65")
        if any(b <= a for a, b in zip(e, e[1:], strict=False)):
            raise InvalidValueError(f"bands: edges must increase, got {','.join(map(str, e))}")
        if e[0] < 1 or e[-1] > MAX_AGE:
            raise InvalidValueError(f"bands: edges must lie in 1..{MAX_AGE} (the age head ends at {MAX_AGE}), "
                                    f"got {','.join(map(str, e))}")

    @classmethod
    def parse(cls, text: str | None) -> AgeBands:
        """Bands from a preset name (``audience``, ``report``, ``life-stage``) or comma-separated edges.

        Raises:
            InvalidValueError: an unknown preset, a value that is not a whole number, or edges that do not
                increase within 1..100.
        """
        if text is None or not text.strip():
            return cls()
        text = text.strip()
        if text in BAND_PRESETS:
            return cls(BAND_PRESETS[text])
        try:
            edges = tuple(int(v) for v in text.split(","))
        except ValueError:
            raise InvalidValueError(
                f"bands: {text!r} is neither a preset ({', '.join(BAND_PRESETS)}) nor whole-year edges such as "
                "13,18,25,35,45,55,65") from None
        return cls(edges)

    @property
    def names(self) -> tuple[str, ...]:
        """``("0-12", "13-17", ..., "65+")``."""
        starts = (0, *self.edges)
        inner = [f"{a}-{b - 1}" for a, b in zip(starts, self.edges, strict=False)]
        return (*inner, f"{self.edges[-1]}+")

    def __len__(self) -> int:
        return len(self.edges) + 1

    def matrix(self, n_ages: int = MAX_AGE + 1) -> np.ndarray:
        """(n_ages, bands) 0/1 matrix: a per-year distribution times it gives the per-band one."""
        idx = self.index(np.arange(n_ages))
        out = np.zeros((n_ages, len(self)))
        out[np.arange(n_ages), idx] = 1.0
        return out

    def index(self, ages: np.ndarray) -> np.ndarray:
        """Band index of each age in years (ages above the last edge fall in the open band)."""
        return np.searchsorted(np.asarray(self.edges), np.asarray(ages, dtype=np.float64), side="right")
