"""Pydantic models for every response, so the OpenAPI document says exactly what clients get."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable reason, e.g. 'not_an_image', 'upload_too_large'.")
    message: str = Field(description="Human-readable explanation naming the item and the reason.")
    item: str | None = Field(default=None, description="The uploaded file (or request part) it concerns.")


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx answer."""

    error: ErrorDetail
    errors: list[ErrorDetail] = Field(
        default_factory=list, description="Per-file errors when every file of a multi-file upload failed."
    )


class AgeDistributionOut(BaseModel):
    """A face's calibrated age distribution over whole years, trimmed where it is below 1e-4."""

    start: int = Field(ge=0, le=100, description="The age in years of the first probability in p.")
    p: list[float] = Field(description="Probability of each year from start on (start, start + 1, ...).")


class FaceOut(BaseModel):
    box: list[float] = Field(
        description="x1, y1, x2, y2 in original image pixels.", min_length=4, max_length=4
    )
    score: float = Field(description="Detector confidence.")
    landmarks: list[list[float]] = Field(description="Five (x, y) points: eyes, nose, mouth corners.")
    age: float
    age_interval: list[float] = Field(description="Low and high end of the age interval.")
    age_group: str
    gender: str
    gender_probability: float = Field(description="Probability of the predicted gender.")
    age_distribution: AgeDistributionOut | None = Field(
        default=None, description="The per-year age distribution population summaries read (absent for a model "
        "whose age head gives no distribution)."
    )


class ImageOut(BaseModel):
    """One uploaded image: ``ImageResult.to_dict()`` with ``path`` set to the uploaded file name."""

    path: str | None
    width: int | None
    height: int | None
    faces: list[FaceOut]
    error: str | None = Field(description="Why this image could not be analysed; null when it was.")
    error_code: str | None = Field(default=None, description="Machine-readable reason; only on failure.")
    filtered: int | None = Field(
        default=None, ge=0, description="Faces found but left out of `faces` by min_face or min_score; only when "
        "one of them was given, and the image was analysed.",
    )
    annotated_jpeg: str | None = Field(
        default=None,
        description="Base64 JPEG with boxes and labels drawn, downscaled to the server's annotate size "
        "(boxes and landmarks above stay in original pixels); only with annotate=true.",
    )
    annotated_note: str | None = Field(
        default=None, description="Why the annotated image was left out (the response's size limit)."
    )


class AnalyzeResponse(BaseModel):
    results: list[ImageOut] = Field(description="One entry per uploaded file, in upload order.")


class HealthResponse(BaseModel):
    status: Literal["ok", "starting"]
    queued: int = Field(description="Images waiting for or in inference.")
    max_queue: int


class ModelInfo(BaseModel):
    """The model bundle's manifest with file-system paths removed; fields beyond these are passed through."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    version: str | None = None


# -- population summaries (/v1/summary) -----------------------------------------------------------------------
class AgeShareOut(BaseModel):
    band: str = Field(description="Age band, e.g. '13-17' or '65+'.")
    share: float = Field(description="Estimated share of the faces in this band (0-1).")
    low: float = Field(description="Low end of the interval of the share.")
    high: float = Field(description="High end of the interval of the share.")
    count: float = Field(description="share x faces: the estimated number of faces.")


class GenderShareOut(BaseModel):
    gender: Literal["female", "male"]
    share: float
    low: float
    high: float
    count: float


class AgeGenderShareOut(BaseModel):
    band: str
    gender: Literal["female", "male"]
    share: float = Field(description="Share of all faces that are in this band and of this gender.")
    low: float
    high: float
    count: float


class SummaryOut(BaseModel):
    """``PopulationSummary.to_dict()``: the same contract as ``summarize``'s summary.json."""

    faces: int = Field(description="Faces the summary counts.")
    people: int | None = Field(description="Null here: each face counts as one unit.")
    interval: float = Field(description="Central probability of every low-high interval.")
    method: str = Field(description="The estimator, e.g. 'em', or 'sum (no population calibration ...)'.")
    bands: list[str]
    age: list[AgeShareOut] = Field(description="One row per band, youngest first.")
    gender: list[GenderShareOut] = Field(description="Female, male; empty when the model has no gender head.")
    age_gender: list[AgeGenderShareOut] = Field(description="Each band's female and male cells.")
    images: int = Field(description="Images summarised, unreadable ones included.")
    errors: int = Field(description="Images that could not be read or analysed (counted, their faces unknown).")
    no_face: int = Field(description="Readable images in which no face was found.")


class SummaryResponse(BaseModel):
    summary: SummaryOut
    results: list[ImageOut] = Field(description="One entry per uploaded file, in upload order (as /v1/analyze).")


class SummaryResultsResponse(BaseModel):
    summary: SummaryOut


class AgeDistributionIn(BaseModel):
    model_config = ConfigDict(strict=True)

    start: int = Field(ge=0, le=100)
    p: list[Annotated[float, Field(ge=0)]] = Field(min_length=1, max_length=101)


class SummaryFaceIn(BaseModel):
    """The parts of a face a summary reads; a face from /v1/analyze fits as it is (other keys are ignored)."""

    model_config = ConfigDict(strict=True)

    age_distribution: AgeDistributionIn
    gender: Literal["female", "male"] | None = None
    gender_probability: float | None = Field(default=None, ge=0, le=1)


class SummaryImageIn(BaseModel):
    """One image's result, as /v1/analyze answers it (other keys are ignored)."""

    model_config = ConfigDict(strict=True)

    path: str | None = None
    faces: list[SummaryFaceIn] = Field(default_factory=list)
    error: str | None = Field(default=None, description="Set for an image that could not be analysed.")


class SummaryRequest(BaseModel):
    """Results to summarise: what /v1/analyze answered, for any number of requests."""

    model_config = ConfigDict(strict=True)

    results: list[SummaryImageIn] = Field(min_length=1)
