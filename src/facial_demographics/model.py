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
from .runtime import cpu_session

MANIFEST = "manifest.json"
GRAPH = "model.onnx"
FORMAT_VERSION = 1
AGE_HEAD_TYPES = ("distribution", "buckets", "regression")


class BundleError(ValueError):
    """A model bundle that cannot be used: missing files, bad manifest, hash mismatch."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_bundle_path() -> Path:
    """The model shipped inside the package."""
    return Path(__file__).parent / "models" / "default"


def _require(manifest: dict[str, Any], dotted: str, kind: type | tuple[type, ...]) -> Any:
    node: Any = manifest
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise BundleError(f"manifest: missing key '{dotted}'")
        node = node[part]
    if not isinstance(node, kind):
        raise BundleError(f"manifest: '{dotted}' must be {kind}, got {type(node).__name__}")
    return node


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Check the schema; raise BundleError naming the first bad key."""
    if _require(manifest, "format", int) != FORMAT_VERSION:
        raise BundleError(f"manifest: unsupported format {manifest['format']} (this version reads {FORMAT_VERSION})")
    _require(manifest, "name", str)
    _require(manifest, "version", str)
    size = _require(manifest, "input.size", int)
    if _require(manifest, "input.color", str) != "RGB":
        raise BundleError("manifest: input.color must be 'RGB'")
    if _require(manifest, "input.layout", str) != "NCHW":
        raise BundleError("manifest: input.layout must be 'NCHW'")
    value_range = _require(manifest, "input.range", list)
    if len(value_range) != 2:
        raise BundleError("manifest: input.range must be [low, high]")
    _require(manifest, "input.name", str)
    if _require(manifest, "alignment.size", int) != size:
        raise BundleError("manifest: alignment.size must equal input.size")
    AlignmentConfig(size=size, margin=float(_require(manifest, "alignment.margin", (int, float))),
                    template=_require(manifest, "alignment.template", str))
    age_type = _require(manifest, "heads.age.type", str)
    if age_type not in AGE_HEAD_TYPES:
        raise BundleError(f"manifest: heads.age.type must be one of {AGE_HEAD_TYPES}, got {age_type!r}")
    _require(manifest, "heads.age.output", str)
    if age_type == "distribution":
        _require(manifest, "heads.age.values", list)
    if age_type == "buckets":
        edges = _require(manifest, "heads.age.edges", list)
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise BundleError("manifest: heads.age.edges must be increasing")
    gender = manifest.get("heads", {}).get("gender")
    if gender is not None:
        _require(manifest, "heads.gender.output", str)
        labels = _require(manifest, "heads.gender.labels", list)
        if sorted(labels) != ["female", "male"]:
            raise BundleError("manifest: heads.gender.labels must be ['male', 'female'] in some order")
    _require(manifest, "sha256", dict)


def write_bundle(out_dir: str | Path, onnx_path: str | Path, manifest: dict[str, Any]) -> Path:
    """Copy the graph into ``out_dir``, stamp its sha256 into the manifest, validate, write."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    graph = out / GRAPH
    if Path(onnx_path).resolve() != graph.resolve():
        shutil.copyfile(onnx_path, graph)
    manifest = {**manifest, "format": FORMAT_VERSION, "sha256": {GRAPH: sha256_file(graph)}}
    validate_manifest(manifest)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


@dataclass(frozen=True)
class ModelBundle:
    """A validated bundle on disk."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path | None = None) -> ModelBundle:
        root = Path(path) if path is not None else default_bundle_path()
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
        validate_manifest(manifest)
        expected = manifest["sha256"].get(GRAPH)
        actual = sha256_file(graph)
        if expected != actual:
            raise BundleError(
                f"{graph}: sha256 mismatch (manifest says {expected}, file is {actual}); "
                "the graph was modified or belongs to another bundle"
            )
        return cls(root, manifest)

    @property
    def graph_path(self) -> Path:
        return self.root / GRAPH

    @property
    def input_size(self) -> int:
        return int(self.manifest["input"]["size"])

    @property
    def alignment(self) -> AlignmentConfig:
        a = self.manifest["alignment"]
        return AlignmentConfig(size=int(a["size"]), margin=float(a["margin"]), template=str(a["template"]))

    @property
    def has_gender(self) -> bool:
        return self.manifest["heads"].get("gender") is not None

    def public_manifest(self) -> dict[str, Any]:
        """The manifest as shown to users and API clients (no file-system paths)."""
        return json.loads(json.dumps(self.manifest))


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


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _quantiles_from_cdf(cdf: np.ndarray, grid: np.ndarray, q: float) -> np.ndarray:
    """Per row, the value where the piecewise-linear CDF (over ``grid``) crosses q."""
    return np.array([np.interp(q, row, grid) for row in cdf])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _check_graph_matches(session: Any, manifest: dict[str, Any], graph: Path) -> None:
    """The manifest's input and output names must exist in the graph (a mismatch would fail every face)."""
    inputs = [i.name for i in session.get_inputs()]
    outputs = {o.name for o in session.get_outputs()}
    if manifest["input"]["name"] not in inputs:
        raise BundleError(
            f"{graph}: manifest input.name {manifest['input']['name']!r} is not an input of the graph "
            f"(the graph's inputs: {', '.join(inputs)})"
        )
    heads = manifest["heads"]
    for head in ("age", "gender"):
        if heads.get(head) and heads[head]["output"] not in outputs:
            raise BundleError(
                f"{graph}: manifest heads.{head}.output {heads[head]['output']!r} is not an output of the graph "
                f"(the graph's outputs: {', '.join(sorted(outputs))})"
            )


class AgeGenderModel:
    """Runs a bundle's graph on aligned faces; safe to call from many threads.

    The session is created lazily; :meth:`warm_up` creates it now. Either way the graph is checked
    against the manifest and run once, so a bundle ONNX Runtime cannot use raises :class:`BundleError`.
    """

    def __init__(self, bundle: ModelBundle | str | Path | None = None, *, threads: int | None = None,
                 interval: float = 0.8) -> None:
        self.bundle = bundle if isinstance(bundle, ModelBundle) else ModelBundle.load(bundle)
        if not 0.0 < interval < 1.0:
            raise ValueError(f"interval must be in (0, 1), got {interval}")
        self.interval = interval
        self.threads = threads
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
            session = cpu_session(str(graph), self.threads)
        except Exception as exc:  # ONNX Runtime raises its own classes (InvalidProtobuf, Fail, ...)
            raise BundleError(f"{graph}: ONNX Runtime cannot load the graph ({_first_line(exc)})") from None
        _check_graph_matches(session, self.bundle.manifest, graph)
        size = self.bundle.input_size
        names = [o.name for o in session.get_outputs()]
        try:  # one real inference: shape or type errors in the graph surface here, not per request
            session.run(names, {self.bundle.manifest["input"]["name"]: self.to_input(
                np.zeros((1, size, size, 3), np.uint8))})
        except Exception as exc:
            raise BundleError(f"{graph}: the warm-up inference failed ({_first_line(exc)})") from None
        return session

    def to_input(self, faces: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) RGB → the graph's float32 NCHW input."""
        size = self.bundle.input_size
        if faces.ndim != 4 or faces.shape[1:] != (size, size, 3):
            raise ValueError(f"expected faces of shape (N, {size}, {size}, 3), got {faces.shape}")
        low, high = self.bundle.manifest["input"]["range"]
        x = faces.astype(np.float32).transpose(0, 3, 1, 2)
        if (low, high) != (0, 255):
            x = x * ((high - low) / 255.0) + low
        return np.ascontiguousarray(x)

    def raw(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs by name."""
        session = self.session
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, {self.bundle.manifest["input"]["name"]: self.to_input(faces)})
        return dict(zip(names, values, strict=True))

    def predict(self, faces: np.ndarray) -> Prediction:
        if len(faces) == 0:
            empty = np.zeros(0, dtype=np.float64)
            return Prediction(empty, empty, empty, empty)
        heads = self.bundle.manifest["heads"]
        out = self.raw(faces)
        logits = out[heads["age"]["output"]].astype(np.float64)
        age, low, high = self._age(logits, heads["age"])
        if heads.get("gender"):
            probs = _softmax(out[heads["gender"]["output"]].astype(np.float64))
            p_female = probs[:, heads["gender"]["labels"].index("female")]
        else:
            p_female = np.full(len(faces), np.nan)
        return Prediction(age, low, high, p_female, *self._age_probs(logits, heads["age"]))

    @staticmethod
    def _age_probs(logits: np.ndarray, head: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The age distributions and the interval's (temperature-scaled) ones; None for a regressor."""
        if head["type"] == "regression":
            return None, None
        temperature = float(head.get("temperature", 1.0))
        probs = _softmax(logits)
        return probs, (_softmax(logits / temperature) if temperature != 1.0 else probs)

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
        return _age_summary(probs, interval_probs, self.bundle.manifest["heads"]["age"], self.interval)

    def _age(self, logits: np.ndarray, head: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if head["type"] == "regression":
            age = logits.reshape(len(logits), -1)[:, 0]
            # A regressor has no distribution: the interval comes from its validation residuals.
            spread = float(head.get("residual_quantile", {}).get(str(self.interval), 0.0))
            return age, np.maximum(age - spread, 0.0), age + spread
        probs, interval_probs = self._age_probs(logits, head)
        assert probs is not None and interval_probs is not None
        return _age_summary(probs, interval_probs, head, self.interval)


def _age_summary(probs: np.ndarray, interval_probs: np.ndarray, head: dict[str, Any],
                 interval: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected age and central ``interval`` of distributions over a distribution or buckets head."""
    tail = (1.0 - interval) / 2.0
    kind = head["type"]
    if kind == "distribution":
        values = np.asarray(head["values"], dtype=np.float64)
        age = probs @ values
        # Each bin is treated as a unit-wide interval around its value for a continuous CDF.
        grid = np.concatenate([[values[0] - 0.5], values + 0.5])
    elif kind == "buckets":
        grid = np.asarray(head["edges"], dtype=np.float64)
        centres = np.asarray(head.get("values", (grid[:-1] + grid[1:]) / 2), dtype=np.float64)
        age = probs @ centres
    else:
        raise ValueError(f"a {kind} age head has no distribution")
    cdf = np.concatenate([np.zeros((len(interval_probs), 1)), np.cumsum(interval_probs, axis=1)], axis=1)
    low = _quantiles_from_cdf(cdf, grid, tail)
    high = _quantiles_from_cdf(cdf, grid, 1.0 - tail)
    return age, np.maximum(low, 0.0), high
