"""The model bundle (an ONNX graph plus a manifest) and the age/gender predictor that runs it.

A bundle is a directory holding ``model.onnx`` and ``manifest.json``. The manifest says everything
inference needs to reproduce training: input size and value range, the alignment template and
margin, how the age head becomes an age, the gender labels, plus provenance (data, licence,
metrics) and the graph's sha256, which is checked on load so a swapped or damaged graph is refused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .alignment import AlignmentConfig
from .errors import UserError
from .manifest import FORMAT_VERSION, BundleError, BundleSpec, validate_manifest
from .registry import resolve
from .runtime import check_device, make_session

__all__ = ["FORMAT_VERSION", "BundleError", "BundleSpec", "ModelBundle", "AgeGenderModel", "Prediction",
           "validate_manifest", "write_bundle", "sha256_file", "default_bundle_path"]

MANIFEST = "manifest.json"
GRAPH = "model.onnx"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_bundle_path() -> Path:
    """The model shipped inside the package (the registry's ``default``)."""
    return resolve(None)


def manifest_text(manifest: Any, indent: str = "") -> str:
    """JSON with two-space indentation, but a list of numbers or strings on one line: the age head's values
    and the population calibration's matrices (a row each) would otherwise take a line per number."""
    inner = indent + "  "
    if isinstance(manifest, dict) and manifest:
        items = (f"{inner}{json.dumps(str(k))}: {manifest_text(v, inner)}" for k, v in manifest.items())
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(manifest, list) and any(isinstance(v, dict | list) for v in manifest):
        return "[\n" + ",\n".join(inner + manifest_text(v, inner) for v in manifest) + "\n" + indent + "]"
    return json.dumps(manifest)


def write_bundle(out_dir: str | Path, onnx_path: str | Path, manifest: dict[str, Any]) -> Path:
    """Copy the graph into ``out_dir``, stamp its sha256 into the manifest, validate, write."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    graph = out / GRAPH
    if Path(onnx_path).resolve() != graph.resolve():
        shutil.copyfile(onnx_path, graph)
    manifest = {**manifest, "format": FORMAT_VERSION, "sha256": {GRAPH: sha256_file(graph)}}
    BundleSpec.parse(manifest)
    (out / MANIFEST).write_text(manifest_text(manifest) + "\n")
    return out


@dataclass(frozen=True)
class ModelBundle:
    """A validated bundle on disk: its directory and the parsed manifest."""

    root: Path
    spec: BundleSpec

    @classmethod
    def load(cls, path: str | Path | None = None) -> ModelBundle:
        """Read, validate and hash-check a bundle: a registry name (``"default"``, ``"fast"``, ...; ``None``
        is the default) or a directory (see :mod:`~facial_demographics.registry`).

        Raises:
            BundleError: an unknown or uninstalled name, missing files, invalid JSON, a bad manifest key or
                a graph whose sha256 differs.
        """
        root = resolve(path)
        if root.is_file() and root.name == MANIFEST:
            root = root.parent
        manifest_path, graph = root / MANIFEST, root / GRAPH
        if not manifest_path.is_file() or not graph.is_file():
            raise BundleError(f"{root}: not a model bundle (needs {MANIFEST} and {GRAPH})")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{manifest_path}: invalid JSON ({exc})") from exc
        if not isinstance(manifest, dict):
            raise BundleError(f"{manifest_path}: the manifest must be a JSON object")
        spec = BundleSpec.parse(manifest)
        expected = spec.sha256.get(GRAPH)
        actual = sha256_file(graph)
        if expected != actual:
            raise BundleError(
                f"{graph}: sha256 mismatch (manifest says {expected}, file is {actual}); "
                "the graph was modified or belongs to another bundle"
            )
        return cls(root, spec)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest document (a fresh copy; read typed fields from :attr:`spec`)."""
        return self.spec.to_manifest()

    @property
    def graph_path(self) -> Path:
        return self.root / GRAPH

    @property
    def input_size(self) -> int:
        return self.spec.input.size

    @property
    def alignment(self) -> AlignmentConfig:
        return self.spec.alignment

    @property
    def has_gender(self) -> bool:
        return self.spec.gender is not None

    def public_manifest(self) -> dict[str, Any]:
        """The manifest as shown to users and API clients (no file-system paths)."""
        return self.spec.to_manifest()


@dataclass(frozen=True)
class Prediction:
    """Per-face model outputs for a batch (arrays of length N)."""

    age: np.ndarray
    age_low: np.ndarray
    age_high: np.ndarray
    p_female: np.ndarray  # NaN when the model has no gender head
    # (N, K) age distributions over the head's bins, for averaging over video frames, and the
    # (possibly temperature-scaled) ones the interval comes from; None for a regression head.
    age_probs: np.ndarray | None = None
    age_interval_probs: np.ndarray | None = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _check_graph_matches(session: Any, spec: BundleSpec, graph: Path) -> None:
    """The manifest's input and output names must exist in the graph (a mismatch would fail every face)."""
    inputs = [i.name for i in session.get_inputs()]
    outputs = {o.name for o in session.get_outputs()}
    if spec.input.name not in inputs:
        raise BundleError(
            f"{graph}: manifest input.name {spec.input.name!r} is not an input of the graph "
            f"(the graph's inputs: {', '.join(inputs)})"
        )
    for head, name in (("age", spec.age.output), ("gender", spec.gender.output if spec.gender else None)):
        if name is not None and name not in outputs:
            raise BundleError(
                f"{graph}: manifest heads.{head}.output {name!r} is not an output of the graph "
                f"(the graph's outputs: {', '.join(sorted(outputs))})"
            )


class AgeGenderModel:
    """Runs a bundle's graph on aligned faces; safe to call from many threads.

    The session is created lazily; :meth:`warm_up` creates it now. Either way the graph is checked
    against the manifest and run once, so a bundle ONNX Runtime cannot use raises :class:`BundleError`.
    """

    def __init__(self, bundle: ModelBundle | str | Path | None = None, *, threads: int | None = None,
                 interval: float = 0.8, device: str = "auto") -> None:
        self.bundle = bundle if isinstance(bundle, ModelBundle) else ModelBundle.load(bundle)
        if not 0.0 < interval < 1.0:
            raise ValueError(f"interval must be in (0, 1), got {interval}")
        self.interval = interval
        self.threads = threads
        self.device = check_device(device)
        self._session: Any = None
        self._lock = threading.Lock()

    @property
    def session(self) -> Any:
        """The ONNX Runtime session, created, checked and warmed up on first use.

        Raises:
            BundleError: the graph cannot be loaded, does not match the manifest, or fails on a test batch.
        """
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._load_session()
        return self._session

    def warm_up(self) -> None:
        """Load the graph and run one inference now, so a bad bundle fails at start, not on the first face.

        Raises:
            BundleError: as for :attr:`session`.
        """
        _ = self.session

    def _load_session(self) -> Any:
        graph = self.bundle.graph_path
        try:
            session = make_session(str(graph), self.threads, self.device)
        except UserError:
            raise
        except Exception as exc:  # ONNX Runtime raises its own classes (InvalidProtobuf, Fail, ...)
            raise BundleError(f"{graph}: ONNX Runtime cannot load the graph ({_first_line(exc)})") from None
        _check_graph_matches(session, self.bundle.spec, graph)
        size = self.bundle.input_size
        names = [o.name for o in session.get_outputs()]
        try:  # one real inference: shape or type errors in the graph surface here, not per request
            session.run(names, {self.bundle.spec.input.name: self.to_input(
                np.zeros((1, size, size, 3), np.uint8))})
        except Exception as exc:
            raise BundleError(f"{graph}: the warm-up inference failed ({_first_line(exc)})") from None
        return session

    def to_input(self, faces: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) RGB → the graph's float32 NCHW input, made in one allocation."""
        size = self.bundle.input_size
        if faces.ndim != 4 or faces.shape[1:] != (size, size, 3):
            raise ValueError(f"expected faces of shape (N, {size}, {size}, 3), got {faces.shape}")
        low, high = self.bundle.spec.input.low, self.bundle.spec.input.high
        # Cast and transpose in one pass into the output (astype + transpose + ascontiguousarray made
        # two float copies of the batch); scaling, when needed, works in place.
        x = np.empty((len(faces), 3, size, size), np.float32)
        np.copyto(x, faces.transpose(0, 3, 1, 2), casting="unsafe")
        if (low, high) != (0, 255):
            x *= (high - low) / 255.0
            x += low
        return x

    def raw(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs by name."""
        session = self.session
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, {self.bundle.spec.input.name: self.to_input(faces)})
        return dict(zip(names, values, strict=True))

    def predict(self, faces: np.ndarray) -> Prediction:
        """Age, interval and P(female) for uint8 (N, S, S, 3) aligned RGB faces."""
        if len(faces) == 0:
            empty = np.zeros(0, dtype=np.float64)
            return Prediction(empty, empty, empty, empty)
        spec = self.bundle.spec
        out = self.raw(faces)
        logits = out[spec.age.output].astype(np.float64)
        if spec.age.type == "regression":
            age, low, high = spec.age.decode(logits, self.interval)
            probs, interval_probs = None, None
        else:  # the softmaxes once: the answer is summarised from the distributions the result carries
            probs, interval_probs = spec.age.distributions(logits)
            age, low, high = spec.age.summarize(probs, interval_probs, self.interval)
        if spec.gender is not None:
            p_female = spec.gender.p_female(out[spec.gender.output].astype(np.float64), age)
        else:
            p_female = np.full(len(faces), np.nan)
        return Prediction(age, low, high, p_female, probs, interval_probs)

    def year_distributions(self, preds: list[Prediction]) -> np.ndarray | None:
        """Per-year (N, 101) age distributions of predicted batches, from the calibrated (interval)
        distributions; None for a regression head."""
        if not preds or any(p.age_interval_probs is None for p in preds):
            return None
        probs = np.concatenate([p.age_interval_probs for p in preds if p.age_interval_probs is not None])
        return self.bundle.spec.age.year_distribution(probs)

    def age_from_distribution(
        self, probs: np.ndarray, interval_probs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expected age and central interval of (N, K) age distributions over this bundle's age bins.

        ``predict`` does this per face; a video track does it on its averaged distributions.

        Args:
            probs: distributions (rows sum to 1) giving the expected age (``Prediction.age_probs``).
            interval_probs: the ones giving the interval (``Prediction.age_interval_probs``).

        Returns:
            ``(age, low, high)``, arrays of length N.

        Raises:
            ValueError: the age head is a regressor (it has no distribution).
        """
        return self.bundle.spec.age.summarize(probs, interval_probs, self.interval)
