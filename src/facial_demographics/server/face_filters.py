"""The ``min_face`` and ``min_score`` query parameters of ``/v1/analyze`` and ``/v1/summary``.

The rule is :class:`~facial_demographics.filters.FaceFilter`'s, as in the CLI and the Python API. The app
shares one analyzer (and its micro-batcher) between requests, so the filter is applied per request to the
faces found, not by reconfiguring the analyzer; the faces it drops are left out of the answer (and of the
summary), and each image's ``filtered`` says how many there were.
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import Query

from ..errors import InvalidValueError
from ..filters import FaceFilter
from ..types import ImageResult
from .errors import ApiError

#: The largest ``min_face`` accepted: no face box in an image under the pixel limit is this big.
MAX_MIN_FACE = 10_000

MIN_FACE_QUERY = Query(
    0, ge=0, le=MAX_MIN_FACE,
    description="Leave out faces smaller than this many pixels (the shorter side of the face's box), e.g. 40 for "
    "faces in the background of a crowd; 0 (the default) keeps every face. As `analyze --min-face`.",
)
MIN_SCORE_QUERY = Query(
    0.0, ge=0, le=1, allow_inf_nan=False,
    description="Leave out faces the detector scored below this (0-1; it already drops those below 0.6), e.g. "
    "0.9 to keep only clear faces; 0 (the default) keeps every face. As `analyze --min-score`.",
)


def face_filter(min_face: float, min_score: float) -> FaceFilter:
    """The filter of a request's query values.

    Raises:
        ApiError: 422 ``invalid_request`` naming the bad value (FastAPI checks the ranges first; this is
            the same rule once more, for callers that skip it).
    """
    try:
        return FaceFilter(min_face, min_score)
    except InvalidValueError as exc:
        item = "min_face" if str(exc).startswith("min_face") else "min_score"
        raise ApiError(422, "invalid_request", str(exc), item) from None


def apply_filter(results: dict[int, ImageResult], rule: FaceFilter) -> dict[int, int]:
    """Drop the faces ``rule`` does not keep from each result (replaced, not changed in place).

    Returns:
        The faces dropped per key of ``results`` (analysed images only); empty when ``rule`` is inactive.
    """
    if not rule.active:
        return {}
    dropped: dict[int, int] = {}
    for key, result in list(results.items()):
        if result.error is not None:
            continue
        kept = [face for face in result.faces if rule.keep(face)]
        dropped[key] = len(result.faces) - len(kept)
        results[key] = replace(result, faces=kept)
    return dropped
