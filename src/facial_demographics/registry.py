"""The model registry: ``--model default | fast | fp32 | seed | PATH`` resolved in one place.

Every command, the server, :class:`~facial_demographics.model.ModelBundle` and
:class:`~facial_demographics.pipeline.FaceAnalyzer` go through :func:`resolve`: a known name means the
bundle shipped inside the package under ``models/<name>``, anything else is a bundle directory. A name
always wins over a directory of the same name in the working directory; write ``./fast`` for that one.
``Path`` objects are always paths (only strings are looked up as names).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .manifest import BundleError

MODELS_DIR = Path(__file__).parent / "models"
#: What ``--model`` and ``FaceAnalyzer(model=...)`` take: a registry name, a bundle directory, or None (default).
ModelRef = str | Path | None
DEFAULT = "default"


@dataclass(frozen=True)
class RegistryEntry:
    """A model name the package knows, what it is, and where its bundle is (or would be) installed."""

    name: str
    summary: str

    @property
    def path(self) -> Path:
        return MODELS_DIR / self.name

    @property
    def installed(self) -> bool:
        return (self.path / "manifest.json").is_file() and (self.path / "model.onnx").is_file()


ENTRIES: dict[str, RegistryEntry] = {e.name: e for e in (
    RegistryEntry("default", "the recommended model: EfficientNet-Lite1 at 112 px trained on UTKFace and "
                  "MORPH, with flip test-time augmentation, INT8"),
    RegistryEntry("fast", "the default's network without flip test-time augmentation, INT8: about twice the "
                  "faces per second at a little accuracy"),
    RegistryEntry("fp32", "the default's float (fp32) graph, as exported from training (0.4.0): the reference, "
                  "and the one to use on a GPU"),
    RegistryEntry("seed", "the seed report's own system (separable CNN at 198 px, 5 age classes + gender), "
                  "reproduced by its recipe: far weaker than the default, kept for comparison"),
)}


class ModelNotInstalledError(BundleError):
    """A registry name whose bundle is not installed in this package."""


def resolve(model: str | Path | None) -> Path:
    """The bundle directory for ``--model`` (``None``: the default model).

    Raises:
        ModelNotInstalledError: a known name whose bundle is not installed (the message says what to do).
        BundleError: neither a known name nor an existing path.
    """
    if model is None:
        model = DEFAULT
    if isinstance(model, str) and model in ENTRIES:
        entry = ENTRIES[model]
        if not entry.installed:
            raise ModelNotInstalledError(f"model {model!r} is not installed: reinstall the package "
                                         f"(expected in {entry.path})")
        return entry.path
    path = Path(model)
    if not path.exists():
        raise BundleError(f"{model}: not a model bundle (no such directory) and not a model name "
                          f"(known: {', '.join(ENTRIES)})")
    return path


def resolve_name(model: ModelRef) -> str | None:
    """The registry name ``model`` stands for (``None``: "default"), or None for another bundle directory."""
    if model is None:
        return DEFAULT
    if isinstance(model, str) and model in ENTRIES:
        return model
    target = Path(model).resolve()
    return next((e.name for e in ENTRIES.values() if e.path.resolve() == target), None)


@dataclass(frozen=True)
class InstalledModel:
    """One row of :func:`list_models`: a registry entry and, when installed, its manifest's summary."""

    name: str
    installed: bool
    summary: str
    note: str | None = None  # why it is not installed
    version: str | None = None
    precision: str | None = None
    tta_flip: bool | None = None
    input_size: int | None = None
    size_bytes: int | None = None
    metrics: dict[str, Any] | None = None  # the manifest's recorded validation comparison, if any
    validation: dict[str, Any] | None = None  # this graph's own validation scores (see _validation)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def list_models() -> list[InstalledModel]:
    """Every registry name, installed or not, with what its manifest says (read, not hash-checked)."""
    rows = []
    for entry in ENTRIES.values():
        if not entry.installed:
            rows.append(InstalledModel(entry.name, False, entry.summary, "not installed"))
            continue
        try:
            doc = json.loads((entry.path / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            rows.append(InstalledModel(entry.name, False, entry.summary, f"unreadable manifest ({exc})"))
            continue
        training = doc.get("training") or {}
        comparison = (doc.get("quantization") or {}).get("comparison")
        rows.append(InstalledModel(
            entry.name, True, entry.summary, None, doc.get("version"), doc.get("precision", "fp32"),
            doc.get("tta_flip", training.get("tta_flip")), (doc.get("input") or {}).get("size"),
            (entry.path / "model.onnx").stat().st_size, comparison, _validation(doc)))
    return rows


def _validation(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The bundle's own validation MAE and gender accuracy (cached val faces): a quantised graph's from its
    comparison with the float graph, a float graph's from its training run's best epoch. No MAE for a
    5-bucket age head, whose "MAE" is to the buckets' representative ages, not comparable."""
    comparison = (doc.get("quantization") or {}).get("comparison") or {}
    if "int8" in comparison:
        own = comparison["int8"]
        return {"source": "quantization", "mae": own.get("mae"), "gender_accuracy": own.get("gender_accuracy")}
    metrics = (doc.get("training") or {}).get("metrics") or {}
    if not metrics:
        return None
    buckets = ((doc.get("heads") or {}).get("age") or {}).get("type") == "buckets"
    return {"source": "training", "mae": None if buckets else metrics.get("val_mae"),
            "gender_accuracy": metrics.get("val_gender_acc")}
