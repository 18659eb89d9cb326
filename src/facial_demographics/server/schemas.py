"""Pydantic models for every response, so the OpenAPI document says exactly what clients get."""

from __future__ import annotations

from typing import Literal

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


class ImageOut(BaseModel):
    """One uploaded image: ``ImageResult.to_dict()`` with ``path`` set to the uploaded file name."""

    path: str | None
    width: int | None
    height: int | None
    faces: list[FaceOut]
    error: str | None = Field(description="Why this image could not be analysed; null when it was.")
    error_code: str | None = Field(default=None, description="Machine-readable reason; only on failure.")
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
