"""Export a training checkpoint to an ONNX model bundle and check it against torch.

The graph takes float32 NCHW RGB in [0, 255] named ``input`` (normalisation is inside the graph, and so
is the flip-TTA when the config uses it) and returns ``age_logits`` (N, K) and ``gender_logits`` (N, 2).
The EMA weights are exported when the run kept them, since those are the weights validation selected.
A run's ``[teacher]`` head (training loss only) is dropped: the graph has the same two outputs.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import __version__
from ..alignment import AlignmentConfig
from ..datasets.cache import load_cache
from ..labels import AGE_BUCKET_EDGES, GENDER_LABELS
from ..manifest import FORMAT_VERSION, AgeHead, GenderHead, InputSpec, alignment_section
from ..model import write_bundle
from .checkpoint import Checkpoint
from .config import RunConfig, config_from_dict
from .data import split_rows, to_input
from .losses import expected_age
from .models import AgeGenderNet, HeadSpec, build_model, head_spec
from .validate import predict_logits

LICENSE = ("Weights trained on UTKFace / MORPH / IMDB-WIKI: non-commercial research use only (dataset terms)")
#: The terms of each backbone's starting weights, added to :data:`LICENSE` in a bundle's manifest.
INIT_LICENSES = {"efficientnet_lite0": "EfficientNet-Lite0 ImageNet initialisation: Apache-2.0",
                 "efficientnet_lite1": "EfficientNet-Lite1 ImageNet initialisation: Apache-2.0",
                 "efficientnet_lite2": "EfficientNet-Lite2 ImageNet initialisation: Apache-2.0",
                 "dlib_resnet": "dlib face-recognition ResNet initialisation: CC0"}
INTERVALS = (0.5, 0.8, 0.9, 0.95)


@dataclass
class ExportReport:
    bundle: Path
    onnx_bytes: int
    max_abs_diff: float
    faces: int
    manifest: dict[str, Any]


class ExportWrapper(nn.Module):
    """Fixed-output module for tracing: (age_logits, gender_logits) or just age_logits."""

    def __init__(self, model: AgeGenderNet, tta_flip: bool):
        super().__init__()
        self.model, self.tta_flip = model, tta_flip

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        age, gender = predict_logits(self.model, x, self.tta_flip)
        return (age,) if gender is None else (age, gender)


def model_from_checkpoint(ckpt: Checkpoint) -> tuple[RunConfig, AgeGenderNet]:
    """The evaluated network of a checkpoint (EMA weights when present), in eval mode."""
    model = build_model(ckpt.config, pretrained=False)
    model.load_state_dict(ckpt.eval_weights)
    model.teacher_head = None  # a [teacher] head is for the training loss only: never evaluated or exported
    return ckpt.config, model.eval()


def sample_inputs(cfg: RunConfig, cache: Path | None, count: int = 16) -> np.ndarray:
    """Real faces for the parity check: val faces from a cache, else the astronaut's face from skimage."""
    size = cfg.data.input_size
    if cache is not None:
        c = load_cache(cache)
        try:
            rows = split_rows(c, _with_cache(cfg, cache), "val")
        except ValueError:
            rows = np.flatnonzero((c.index["status"] != "unreadable").to_numpy())
        rows = rows[np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int))]
        faces = torch.from_numpy(np.ascontiguousarray(c.faces[np.sort(rows)]))
    else:
        from skimage.data import astronaut

        face = np.ascontiguousarray(astronaut()[20:220, 150:350])  # her face, roughly centred
        faces = torch.from_numpy(np.stack([face, face[:, ::-1], face[::-1]]).copy())
    return to_input(faces, size).numpy()


def _with_cache(cfg: RunConfig, cache: Path) -> RunConfig:
    raw = cfg.to_dict()
    raw["data"]["cache"] = str(cache)
    return config_from_dict(raw)


def age_head(spec: HeadSpec, residuals: np.ndarray | None) -> AgeHead:
    """The bundle's age head for a training head spec (regression intervals from ``residuals``)."""
    if spec.age_type == "buckets5":
        return AgeHead("age_logits", "buckets", values=tuple(spec.age_values), edges=AGE_BUCKET_EDGES)
    if spec.age_type == "regression":
        quantiles: dict[str, float] = {}
        if residuals is not None and len(residuals):
            # Intervals for a point regressor come from the spread of its validation errors.
            quantiles = {str(q): float(np.quantile(np.abs(residuals), q)) for q in INTERVALS}
        return AgeHead("age_logits", "regression", values=(), residual_quantile=quantiles)
    return AgeHead("age_logits", "distribution", values=tuple(spec.age_values))


def _val_residuals(cfg: RunConfig, model: AgeGenderNet, spec: HeadSpec,
                   cache: Path | None) -> np.ndarray | None:
    if spec.age_type != "regression" or cache is None:
        return None
    c = load_cache(cache)
    rows = split_rows(c, _with_cache(cfg, cache), "val")
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), 128):
            chunk = rows[start:start + 128]
            x = to_input(torch.from_numpy(np.ascontiguousarray(c.faces[chunk])), cfg.data.input_size)
            pred = expected_age(predict_logits(model, x, cfg.train.tta_flip)[0], spec).numpy()
            out.append(pred - c.index["age"].to_numpy(dtype=float)[chunk])
    return np.concatenate(out)


def build_manifest(cfg: RunConfig, ckpt: Checkpoint, spec: HeadSpec,
                   residuals: np.ndarray | None) -> dict[str, Any]:
    meta = ckpt.data_meta
    size = cfg.data.input_size
    return {
        "name": cfg.name,
        "version": __version__,  # the package that trained it
        "format": FORMAT_VERSION,
        "input": InputSpec("input", size, 0, 255).to_dict(),
        # Inference aligns straight to the input size with the template and margin the cache used.
        "alignment": alignment_section(AlignmentConfig(size=size, margin=float(meta.get("margin") or 0.0),
                                                       template=meta.get("template", "utkface5"))),
        "heads": {
            "age": age_head(spec, residuals).to_dict(),
            "gender": GenderHead("gender_logits", GENDER_LABELS).to_dict() if spec.gender else None,
        },
        "training": {
            "config": cfg.name, "description": cfg.description, "model": cfg.model.name,
            "data": {"cache": meta.get("cache", cfg.data.cache), "split": cfg.data.split,
                     "age_range": cfg.data.age_range},
            "round": ckpt.round, "epochs": ckpt.epoch, "global_step": ckpt.global_step,
            "tta_flip": cfg.train.tta_flip, "ema": cfg.train.ema,
            "metrics": {k: v for k, v in ckpt.metrics.items() if k.startswith("val_")},
            "best": ckpt.best.to_dict(),
        },
        "license": "; ".join([LICENSE, *([INIT_LICENSES[cfg.model.name]] if cfg.model.name in INIT_LICENSES
                                          and cfg.model.pretrained else [])]),
    }


def onnx_parity(onnx_path: Path, wrapper: ExportWrapper, inputs: np.ndarray) -> float:
    """Largest absolute difference between torch and ONNX Runtime over every output."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": inputs.astype(np.float32)})
    with torch.no_grad():
        want = wrapper(torch.from_numpy(inputs))
    return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want, strict=True))


def write_onnx(wrapper: ExportWrapper, size: int, path: Path, opset: int) -> None:
    names = ["age_logits", "gender_logits"][: 2 if wrapper.model.gender_head is not None else 1]
    dummy = torch.zeros(2, 3, size, size)
    # The TorchScript exporter (dynamo=False) needs no onnxscript and handles this plain CNN exactly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(wrapper, (dummy,), str(path), input_names=["input"], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in ["input", *names]}, opset_version=opset,
                          dynamo=False)


def export_bundle(ckpt_path: Path, out: Path, cache: Path | None = None, opset: int = 17,
                  tolerance: float = 1e-4, name: str | None = None) -> ExportReport:
    """Write ``out/model.onnx`` + ``out/manifest.json`` from a checkpoint; raises if ONNX disagrees.
    ``name`` is the bundle's manifest name (default: the config's, e.g. ``v04_morph``)."""
    ckpt = Checkpoint.load(Path(ckpt_path))
    cfg, model = model_from_checkpoint(ckpt)
    spec = head_spec(cfg)
    wrapper = ExportWrapper(model, cfg.train.tta_flip).eval()
    residuals = _val_residuals(cfg, model, spec, cache)
    manifest = build_manifest(cfg, ckpt, spec, residuals)
    manifest["name"] = name or manifest["name"]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        write_onnx(wrapper, cfg.data.input_size, onnx_path, opset)
        inputs = sample_inputs(cfg, cache)
        diff = onnx_parity(onnx_path, wrapper, inputs)
        if not diff < tolerance:
            raise RuntimeError(f"{ckpt_path}: ONNX and torch disagree by {diff:.3g} (> {tolerance:g})")
        manifest["training"]["export_max_abs_diff"] = diff
        bundle = Path(write_bundle(Path(out), onnx_path, manifest))
    return ExportReport(bundle, (bundle / "model.onnx").stat().st_size, diff, len(inputs), manifest)

