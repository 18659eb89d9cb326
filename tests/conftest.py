"""Shared fixtures: the real dataset (skipped when absent) and a real photo that ships with scikit-image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def utkface_dir() -> Path:
    """UTKFace images: $FD_UTKFACE_DIR or <repo>/../shared/datasets/UTKFace; the test skips when absent."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "UTKFace"
    path = Path(os.environ.get("FD_UTKFACE_DIR", default))
    if not path.is_dir():
        pytest.skip(f"UTKFace not found at {path} (set FD_UTKFACE_DIR)")
    return path


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real 512x512 photo with a face, uint8 RGB, bundled with scikit-image (no download)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut(), dtype=np.uint8)


def build_untrained_bundle(out: Path, size: int = 64, seed: int = 0) -> Path:
    """Export a small, untrained conv net as a real bundle: the whole pipeline runs on it,
    only its numbers are meaningless."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from facial_demographics.model import write_bundle

    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    inits = [
        numpy_helper.from_array(np.array([255.0], dtype=np.float32), "scale"),
        weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("w2", 16, 8, 3, 3), weight("b2", 16),
        weight("wa", 16, 101), weight("ba", 101), weight("wg", 16, 2), weight("bg", 2),
    ]
    nodes = [
        helper.make_node("Div", ["input", "scale"], ["x0"]),
        helper.make_node("Conv", ["x0", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "wa", "ba"], ["age_logits"]),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["gender_logits"]),
    ]
    graph = helper.make_graph(
        nodes, "untrained",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("age_logits", TensorProto.FLOAT, ["N", 101]),
         helper.make_tensor_value_info("gender_logits", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out / "model.onnx")
    manifest = {
        "name": "untrained-test", "version": "0.0.0",
        "input": {"name": "input", "size": size, "color": "RGB", "layout": "NCHW", "range": [0, 255]},
        "alignment": {"template": "utkface5", "size": size, "margin": 0.0},
        "heads": {"age": {"output": "age_logits", "type": "distribution", "values": list(range(101))},
                  "gender": {"output": "gender_logits", "labels": ["male", "female"]}},
        "training": {"data": "none (untrained test model)"}, "license": "Apache-2.0",
    }
    return write_bundle(out, out / "model.onnx", manifest)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ONNX bundle (see build_untrained_bundle)."""
    return build_untrained_bundle(tmp_path_factory.mktemp("bundle") / "untrained")
