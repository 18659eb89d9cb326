"""INT8 bundles: ONNX Runtime static quantisation of a bundle's graph, and flip-TTA removal.

Static quantisation (QDQ format, per-channel weights, unsigned 8-bit activations, signed 8-bit weights:
the U8S8 pairing that x86 VNNI and ARM dot-product kernels run fastest) needs calibration faces to fix
each activation's range. They come from the aligned-face cache's **training** split (or validation;
never test), so the test split stays untouched and the validation split stays a fair place to compare
the float and the quantised graph, which :func:`quantize_bundle` does and records in the manifest.

Flip test-time augmentation is baked into an exported graph (``predict_logits``: the network runs on
the face and its mirror and the logits are averaged); :func:`strip_flip_tta` cuts the mirrored branch
out of such a graph, so a bundle without TTA can be made from a shipped bundle without its checkpoint.

Needs ``onnx`` (the ``train`` extra) and ONNX Runtime; not torch.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.cache import FaceCache, load_cache, split_faces
from ..datasets.splits import read_split, split_paths
from ..errors import InvalidValueError, UserError
from ..manifest import BundleSpec
from ..model import AgeGenderModel, ModelBundle, write_bundle

CALIBRATION_SPLITS = ("train", "val")


class QuantizeError(UserError, ValueError):
    """A bundle or cache that cannot be quantised as asked (the message says why)."""


@dataclass(frozen=True)
class SplitAccuracy:
    """A graph's answers on the cached faces of one split."""

    mae: float
    gender_accuracy: float | None
    interval_coverage: float
    faces_per_s: float  # batch 64, this machine, at the time of the run

    def to_dict(self) -> dict[str, Any]:
        return {"mae": round(self.mae, 4), "gender_accuracy": None if self.gender_accuracy is None
                else round(self.gender_accuracy, 4), "interval_coverage": round(self.interval_coverage, 4)}


@dataclass(frozen=True)
class QuantizeReport:
    """What :func:`quantize_bundle` wrote and how the two graphs compare on the validation split."""

    bundle: Path
    source: Path
    onnx_bytes: int
    source_bytes: int
    calibration_split: str
    calibration_faces: int
    source_tta: bool
    tta_flip: bool
    split: str
    faces: int
    reference: SplitAccuracy  # the source graph (flip TTA as it had)
    quantized: SplitAccuracy


# -- graph surgery --------------------------------------------------------------------------------
def _producers(graph: Any) -> dict[str, Any]:
    return {out: node for node in graph.node for out in node.output}


def _reaches_flip(tensor: str, producers: dict[str, Any], flip_outputs: set[str]) -> bool:
    """Whether ``tensor`` is computed from the mirrored input (walks the graph backwards)."""
    stack, seen = [tensor], set()
    while stack:
        name = stack.pop()
        if name in flip_outputs:
            return True
        if name in seen or name not in producers:
            continue
        seen.add(name)
        stack.extend(producers[name].input)
    return False


def _flip_outputs(graph: Any) -> set[str]:
    """Outputs of the Slice that mirrors the input along its width (torch's ``x.flip(-1)``)."""
    from onnx import numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    found = set()
    for node in graph.node:
        if node.op_type == "Slice" and len(node.input) >= 5 and node.input[4] in constants:
            if np.all(np.asarray(constants[node.input[4]]) < 0):  # negative step: a mirror
                found.add(node.output[0])
    return found


def strip_flip_tta(model: Any) -> Any:
    """The graph without its mirrored branch: each output becomes the plain branch's logits.

    Args:
        model: an ``onnx.ModelProto`` exported with flip TTA (``output = (plain + mirrored) / 2``).

    Returns:
        A new ``ModelProto`` with the same inputs and outputs, the mirrored branch and unused weights gone.

    Raises:
        QuantizeError: the graph has no flip TTA of that form.
    """
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    producers = _producers(graph)
    flips = _flip_outputs(graph)
    if not flips:
        raise QuantizeError("the graph has no flip test-time augmentation to remove (no mirroring Slice)")
    for output in graph.output:
        div = producers.get(output.name)
        add = producers.get(div.input[0]) if div is not None and div.op_type == "Div" else None
        if div is None or add is None or add.op_type != "Add":
            raise QuantizeError(f"output {output.name!r} is not (plain + mirrored) / 2; cannot remove the TTA")
        plain = [t for t in add.input if not _reaches_flip(t, producers, flips)]
        if len(plain) != 1:
            raise QuantizeError(f"output {output.name!r}: cannot tell the plain branch from the mirrored one")
        # The Div node now passes the plain logits through unchanged (an Identity under the same name).
        div.op_type, div.input[:] = "Identity", plain
    _prune(graph)
    onnx.checker.check_model(model)
    return model


def _prune(graph: Any) -> None:
    """Drop nodes and initializers that no graph output depends on."""
    producers = _producers(graph)
    needed: set[str] = set()
    stack = [o.name for o in graph.output]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        if name in producers:
            stack.extend(producers[name].input)
    keep = [n for n in graph.node if any(o in needed for o in n.output)]
    del graph.node[:]
    graph.node.extend(keep)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def strip_tta_bundle(source: ModelBundle, out: Path, *, name: str | None = None) -> Path:
    """Write ``source`` without its flip TTA to ``out`` (same precision, ``tta_flip`` false in the manifest).

    Raises:
        QuantizeError: the source graph has no flip TTA.
    """
    import onnx

    if not source.spec.tta_flip:
        raise QuantizeError(f"{source.root}: the graph has no flip TTA to remove")
    doc = source.spec.to_manifest()
    doc["tta_flip"] = False
    doc["name"] = name or doc["name"]
    doc["derived_from"] = {"name": source.spec.name, "version": source.spec.version,
                           "sha256": source.spec.sha256.get("model.onnx"), "change": "flip TTA removed"}
    with tempfile.TemporaryDirectory(prefix="fd-strip-") as tmp:
        graph = Path(tmp) / "model.onnx"
        onnx.save(strip_flip_tta(onnx.load(str(source.graph_path))), str(graph))
        return write_bundle(out, graph, doc)


# -- calibration ----------------------------------------------------------------------------------
def calibration_faces(cache: FaceCache, split_file: Path, split: str, count: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of ``count`` cached faces of ``split`` ("train" or "val"; never "test").

    Raises:
        QuantizeError: a test split asked for, or the split has no usable cached face.
    """
    if split not in CALIBRATION_SPLITS:
        raise QuantizeError(f"calibration faces must come from {' or '.join(CALIBRATION_SPLITS)}, not {split!r} "
                            "(the test split is kept for the final measurement)")
    mapping = read_split(split_file)
    index = cache.index
    usable = (index["key"].map(mapping) == split) & (index["status"] == "ok")
    rows = np.flatnonzero(usable.to_numpy())
    if len(rows) == 0:
        raise QuantizeError(f"{cache.path}: no cached face of the {split!r} split in {split_file}")
    chosen = np.sort(np.random.default_rng(seed).choice(rows, size=min(count, len(rows)), replace=False))
    return np.asarray(cache.faces[chosen])  # only the sample is read from the memory-mapped cache


class _FaceReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over uint8 faces, a few at a time."""

    def __init__(self, faces: np.ndarray, to_input: Callable[[np.ndarray], np.ndarray], input_name: str,
                 batch: int = 16) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = (
            {input_name: to_input(faces[i:i + batch])} for i in range(0, len(faces), batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_graph(source: Path, target: Path, faces: np.ndarray, to_input: Callable[[np.ndarray], np.ndarray],
                   input_name: str) -> None:
    """Write the static INT8 (QDQ, per-channel) version of ``source`` to ``target``.

    The graph is first pre-processed (shape inference and ONNX Runtime's basic fusions, so Conv + Clip
    are quantised as one), as ONNX Runtime recommends; activation ranges are the min/max over ``faces``.
    Weights are quantised to 7 bits (``reduce_range``): with 8-bit weights and uint8 activations (U8S8),
    x86 CPUs without VNNI (AVX2 and plain AVX512, e.g. many AMD EPYC) multiply with VPMADDUBSW, whose 16-bit
    sums saturate; ONNX Runtime's quantisation guide names reduce_range as the remedy. Found when 0.3.0's
    INT8 default read the astronaut portrait as 25.6 years on an AVX2-only EPYC against 33.1 on the box it
    was made on (fp32: 33.0 on both).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="fd-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(target), _FaceReader(faces, to_input, input_name),
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )


# -- comparison -----------------------------------------------------------------------------------
def split_accuracy(model: AgeGenderModel, faces: np.ndarray, ages: np.ndarray, genders: np.ndarray,
                   batch: int = 64) -> SplitAccuracy:
    """MAE, gender accuracy and interval coverage over cached faces, and faces/s at batch 64."""
    age, low, high, p_female = [], [], [], []
    for i in range(0, len(faces), batch):
        p = model.predict(faces[i:i + batch])
        age.append(p.age)
        low.append(p.age_low)
        high.append(p.age_high)
        p_female.append(p.p_female)
    pred, lo, hi, pf = (np.concatenate(v) for v in (age, low, high, p_female))
    known = ~np.isnan(genders) & ~np.isnan(pf)
    gender_acc = float(np.mean((pf[known] >= 0.5) == (genders[known] == 1))) if known.any() else None
    x = np.resize(faces[:64], (64, *faces.shape[1:]))
    model.predict(x)
    started = time.perf_counter()
    for _ in range(4):
        model.predict(x)
    fps = 4 * 64 / (time.perf_counter() - started)
    return SplitAccuracy(float(np.mean(np.abs(pred - ages))), gender_acc,
                         float(np.mean((ages >= lo) & (ages <= hi))), fps)


def _quantized_manifest(spec: BundleSpec, tta_flip: bool, calibration: dict[str, Any]) -> dict[str, Any]:
    doc = spec.to_manifest()
    doc["precision"] = "int8"
    doc["tta_flip"] = tta_flip
    doc["quantization"] = {
        "method": "onnxruntime static, QDQ, per-channel weights (int8), activations uint8, min/max calibration",
        "from": {"name": spec.name, "version": spec.version, "precision": spec.precision,
                 "sha256": spec.sha256.get("model.onnx")},
        "calibration": calibration,
        "comparison": None,  # filled in once the written bundle has been measured
    }
    return doc


def _check_cache(cache: FaceCache, bundle: ModelBundle) -> None:
    if cache.size != bundle.input_size:
        raise QuantizeError(f"{cache.path}: faces are {cache.size} px, the model takes {bundle.input_size} px")


def quantize_bundle(source: ModelBundle, out: Path, cache_dir: Path, split_file: Path, *,
                    tta_flip: bool | None = None, calibration_split: str = "train", calibration_count: int = 200,
                    compare_split: str = "val", name: str | None = None,
                    progress: Callable[[str], None] | None = None) -> QuantizeReport:
    """Write an INT8 copy of ``source`` to ``out`` and compare both graphs on ``compare_split``.

    Args:
        source: a float (fp32) bundle.
        out: the bundle directory to write (created).
        cache_dir: an aligned-face cache at the model's input size (``data prepare``).
        split_file: the key,split CSV the cache's faces are assigned by.
        tta_flip: ``False`` removes the flip TTA baked into the graph (about half the work); ``None``
            keeps the source's.
        calibration_split: "train" or "val" (never "test").
        calibration_count: calibration faces (a seeded sample).
        compare_split: where the float and INT8 graphs are compared ("val" by default).
        name: the new bundle's manifest name (default: the source's).
        progress: called with a short phrase before each step.

    Returns:
        The report (sizes, calibration, both graphs' accuracy); the manifest records the same.

    Raises:
        QuantizeError: an INT8 source, a test calibration split, a cache of another size, a graph without
            flip TTA when ``tta_flip=False`` is asked for.
    """
    import onnx

    say = progress or (lambda _: None)
    if source.spec.precision != "fp32":
        raise QuantizeError(f"{source.root}: already {source.spec.precision}; quantise the float bundle")
    if compare_split == "test":
        raise InvalidValueError("compare on train or val: the test split is kept for the final measurement")
    cache = load_cache(cache_dir)
    _check_cache(cache, source)
    had_tta = bool(source.spec.tta_flip)
    keep_tta = had_tta if tta_flip is None else tta_flip
    if keep_tta and not had_tta:
        raise QuantizeError(f"{source.root}: the graph has no flip TTA to keep; export the checkpoint with it")
    reference = AgeGenderModel(source)
    say(f"reading {calibration_count} {calibration_split} faces for calibration")
    calib = calibration_faces(cache, split_file, calibration_split, calibration_count)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="fd-quant-") as tmp:
        graph = source.graph_path
        if not keep_tta and had_tta:
            say("removing the flip TTA from the graph")
            graph = Path(tmp) / "no_tta.onnx"
            onnx.save(strip_flip_tta(onnx.load(str(source.graph_path))), str(graph))
        say("quantising (static INT8, QDQ, per-channel)")
        quantized = Path(tmp) / "model.onnx"
        quantize_graph(graph, quantized, calib, reference.to_input, source.spec.input.name)
        files = ",".join(p.name for p in split_paths(split_file))
        calibration = {"split": calibration_split, "faces": int(len(calib)), "split_file": files}
        doc = _quantized_manifest(source.spec, keep_tta, calibration)
        doc["name"] = name or doc["name"]
        write_bundle(out, quantized, doc)
    say(f"comparing both graphs on the {compare_split} split")
    faces, rows = split_faces(cache, split_file, compare_split)
    ages = rows["age"].to_numpy(dtype=np.float64)
    genders = rows["gender"].to_numpy(dtype=np.float64)
    ref_acc = split_accuracy(reference, faces, ages, genders)
    bundle = ModelBundle.load(out)
    int8_acc = split_accuracy(AgeGenderModel(bundle), faces, ages, genders)
    comparison = {"split": compare_split, "faces": int(len(faces)), "source": ref_acc.to_dict(),
                  "int8": int8_acc.to_dict()}
    doc = bundle.manifest
    doc["quantization"]["comparison"] = comparison
    write_bundle(out, bundle.graph_path, doc)
    return QuantizeReport(out, source.root, bundle.graph_path.stat().st_size, source.graph_path.stat().st_size,
                          calibration_split, int(len(calib)), had_tta, keep_tta, compare_split, int(len(faces)),
                          ref_acc, int8_acc)
