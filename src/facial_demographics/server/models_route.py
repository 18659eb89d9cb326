"""``GET /v1/models``: the models this installation knows, which are installed, and which one is serving."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..registry import list_models, resolve_name


class ModelEntryOut(BaseModel):
    """One registry name."""

    name: str = Field(description="Pass it as --model NAME (or FD_MODEL) to serve it.")
    installed: bool
    loaded: bool = Field(description="Whether this server is answering with it.")
    summary: str
    note: str | None = Field(None, description="Why it is not installed, and what to do instead.")
    version: str | None = None
    precision: str | None = Field(None, description="fp32 or int8.")
    tta_flip: bool | None = Field(None, description="Whether each face is also run mirrored and averaged.")
    input_size: int | None = None
    size_bytes: int | None = Field(None, description="Size of the model graph.")
    metrics: dict[str, Any] | None = Field(
        None, description="For a quantised model: its validation-split comparison with the float graph.")
    validation: dict[str, Any] | None = Field(
        None, description="This graph's own validation MAE (null for a 5-bucket head) and gender accuracy on the "
        "cached val faces, and their source: 'quantization' (measured at quantisation) or 'training' (the "
        "run's best epoch).")


class ModelsResponse(BaseModel):
    """Every model name, installed or not."""

    loaded: str = Field(description="The registry name of the serving model, or 'custom' for a bundle directory.")
    models: list[ModelEntryOut]


def models_router(model: str | None) -> APIRouter:
    """The route, for a server started with ``--model model`` (``None``: the default)."""
    router = APIRouter()
    loaded = resolve_name(model) or "custom"

    @router.get("/models", response_model=ModelsResponse, tags=["model"])
    async def models() -> ModelsResponse:
        """Every model name this installation knows (default, fast, fp32, seed), whether it is installed, and
        which one this server is answering with; `GET /v1/model` gives the serving model's whole manifest."""
        rows = [ModelEntryOut(**m.to_dict(), loaded=m.name == loaded) for m in list_models()]
        return ModelsResponse(loaded=loaded, models=rows)

    return router
