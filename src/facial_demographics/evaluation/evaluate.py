"""``facial-demographics evaluate``: run the user-facing pipeline over a labelled split and report.

The images go through :class:`~facial_demographics.pipeline.FaceAnalyzer` exactly as users get it
(detection, alignment, model, interval), not through the training cache, so the report measures the
product. Per image the highest-scoring face is scored; images with no face, with the whole-image
fallback, and unreadable ones are counted, and every record gets a row in ``predictions.csv``.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facial_demographics.datasets.errors import DataError
from facial_demographics.datasets.records import Record
from facial_demographics.errors import InvalidValueError
from facial_demographics.evaluation.metrics import compute_metrics, domain_summary
from facial_demographics.evaluation.report import ModelEvaluation, ReportContext, write_report
from facial_demographics.labels import GENDER_LABELS
from facial_demographics.model import ModelBundle
from facial_demographics.progress import ProgressFactory, no_progress
from facial_demographics.registry import ModelRef
from facial_demographics.types import ImageResult

#: Columns of predictions.csv, in order.
PREDICTION_COLUMNS = (
    "key", "path", "true_age", "true_gender", "race", "pred_age", "age_low", "age_high", "pred_gender",
    "p_female", "status", "n_faces", "face_score", "box_x1", "box_y1", "box_x2", "box_y2", "error",
)
#: Repository root when running from a checkout (splits/ lives there).
REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class EvaluationSet:
    """The records to evaluate and a sentence saying how they were chosen."""

    records: list[Record]
    note: str
    format: str


def default_split_file(format: str) -> Path | None:
    """``splits/<format>.csv`` in the checkout or the working directory, when it exists."""
    for root in (REPO_ROOT, Path.cwd()):
        candidate = root / "splits" / f"{format}.csv"
        if candidate.is_file():
            return candidate
    return None


def select_records(dataset: Path, *, format: str | None = None, split: str = "test",
                   split_file: Path | None = None, limit: int | None = None,
                   seed: int = 0) -> EvaluationSet:
    """Load the dataset, keep the split's records and, with ``limit``, a seeded random sample of them."""
    from facial_demographics.datasets.loader import detect_format, load_dataset
    from facial_demographics.datasets.splits import apply_split, read_split

    fmt = format or detect_format(dataset)
    result = load_dataset(dataset, fmt)
    records = list(result.records)
    notes = [f"{len(records)} usable records"
             + (f" ({len(result.rejected)} rejected by the reader)" if result.rejected else "")]
    chosen_file = split_file if split_file is not None else default_split_file(fmt)
    if chosen_file is None:
        notes.append(f"no split file given or found (looked for splits/{fmt}.csv): evaluating ALL records, "
                     "which may include training images")
    else:
        part = apply_split(records, read_split(chosen_file), split)
        if split_file is None and len(part.missing) == len(records):
            # The default split belongs to another copy of the dataset: say so rather than refuse.
            notes.append(f"the default split file {chosen_file} names none of these images: "
                         "evaluating ALL records")
        elif not part.records:
            raise DataError(f"{chosen_file}: no records of split {split!r} match this dataset "
                             f"({len(part.missing)} of {len(records)} keys are not in the split file)")
        else:
            records = part.records
            notes.append(f"split {split!r} from {chosen_file}: {len(records)} records" + (
                f" ({len(part.missing)} dataset keys not in the split file)" if part.missing else ""))
    if limit is not None:
        if limit < 1:
            raise InvalidValueError(f"limit must be at least 1, got {limit}")
        if limit < len(records):
            keep = set(random.Random(seed).sample(range(len(records)), limit))
            records = [r for i, r in enumerate(records) if i in keep]  # keep reading order (archives)
            notes.append(f"limited to a seeded random sample of {limit}")
    return EvaluationSet(records, "; ".join(notes), fmt)


def _sources(records: Sequence[Record], read_errors: dict[int, str]) -> Iterator[Any]:
    """Plain paths as they are; archive members as their bytes (read in archive order, one pass)."""
    from facial_demographics.datasets.utkface import MemberReader, split_archive_path

    with MemberReader() as reader:
        for i, r in enumerate(records):
            if split_archive_path(r.path) is None:
                yield r.path
                continue
            try:
                yield reader.read(r.path)
            except (OSError, FileNotFoundError) as exc:
                read_errors[i] = f"cannot read archive member: {exc}"
                yield b""


def prediction_row(record: Record, result: ImageResult) -> dict[str, Any]:
    """One predictions.csv row: the record's labels and the pipeline's best face (highest score)."""
    row: dict[str, Any] = {
        "key": record.key, "path": record.path,
        "true_age": np.nan if record.age is None else float(record.age),
        "true_gender": "" if record.gender is None else GENDER_LABELS[record.gender],
        "race": record.groups.get("race", ""),
        "pred_age": np.nan, "age_low": np.nan, "age_high": np.nan, "pred_gender": "", "p_female": np.nan,
        "n_faces": len(result.faces), "face_score": np.nan,
        "box_x1": np.nan, "box_y1": np.nan, "box_x2": np.nan, "box_y2": np.nan, "error": result.error or "",
    }
    if result.error is not None:
        return {**row, "status": "unreadable"}
    if not result.faces:
        return {**row, "status": "no_face"}
    face = max(result.faces, key=lambda f: f.score)
    p_female = np.nan
    if face.gender is not None and face.gender_probability is not None:
        p = float(face.gender_probability)
        p_female = p if face.gender == "female" else 1.0 - p
    x1, y1, x2, y2 = face.box
    return {
        **row, "status": "fallback" if face.fallback else "ok",
        "pred_age": face.age, "age_low": face.age_interval[0], "age_high": face.age_interval[1],
        "pred_gender": face.gender or "", "p_female": p_female, "face_score": face.score,
        "box_x1": x1, "box_y1": y1, "box_x2": x2, "box_y2": y2,
    }


def model_info(manifest: dict[str, Any], path: ModelRef) -> dict[str, Any]:
    """Name, version and graph sha256 from a bundle manifest (the ``model`` key of metrics.json)."""
    sha = manifest.get("sha256", {})
    return {
        "name": manifest.get("name"),
        "version": manifest.get("version"),
        "sha256": sha.get("model.onnx") if isinstance(sha, dict) else sha,
        "path": str(path) if path is not None else "(default bundle)",
    }


def run_model(records: Sequence[Record], model: ModelRef, *, cropped: bool,
              progress: ProgressFactory = no_progress, batch_size: int = 32, device: str = "auto",
              ) -> tuple[pd.DataFrame, dict[str, Any], float]:
    """Predictions frame, model info and nominal interval level for one model over ``records``."""
    from facial_demographics.pipeline import FaceAnalyzer

    analyzer = FaceAnalyzer(model=model, cropped=cropped, batch_size=batch_size, device=device)
    info = model_info(analyzer.manifest, model)
    read_errors: dict[int, str] = {}
    with progress(f"{info['name']} {info['version']}", len(records)) as advance:
        # iter_analyze is what analyze_batch runs; it also takes a generator, so archive members
        # are read lazily, in order, while earlier images are being analysed.
        results = list(analyzer.iter_analyze(_sources(records, read_errors), names=[r.path for r in records],
                                             progress=advance))
    if len(results) != len(records):
        raise RuntimeError(f"pipeline returned {len(results)} results for {len(records)} images")
    for i, reason in read_errors.items():
        results[i] = ImageResult(path=records[i].path, error=reason)
    frame = pd.DataFrame([prediction_row(r, res) for r, res in zip(records, results, strict=True)],
                         columns=list(PREDICTION_COLUMNS))
    return frame, info, float(analyzer.model.interval)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _clean(value: Any) -> Any:
    """NaN → None recursively, so metrics.json is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_outputs(out: Path, frame: pd.DataFrame, metrics: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "predictions.csv", index=False)
    write_metrics(out, metrics)


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    """``out/metrics.json``, strict JSON (NaN as null)."""
    (out / "metrics.json").write_text(
        json.dumps(_clean(metrics), indent=2, default=_json_default, allow_nan=False) + "\n",
        encoding="utf-8")


@dataclass(frozen=True)
class DomainRun:
    """One other dataset (``--domain``) evaluated with the same models: where, which records, the results."""

    name: str
    dataset: Path
    format: str
    selection: str
    evaluations: list[ModelEvaluation]
    folders: list[Path]
    report: Path


@dataclass(frozen=True)
class EvaluationRun:
    """What :func:`evaluate_dataset` did: the selection, each model's evaluation and where it is written."""

    dataset: Path
    format: str
    selection: str  # e.g. "split 'test' of splits/utkface.csv: 2,018 records"
    evaluations: list[ModelEvaluation]
    folders: list[Path]  # predictions.csv + metrics.json of each model, in order
    report: Path
    domains: list[DomainRun] = field(default_factory=list)


def _bundles(model: ModelRef | Sequence[str | Path], compare: Sequence[str | Path] | None) -> list[ModelRef]:
    """The models to evaluate; strings stay strings so registry names ("fast") resolve (see registry)."""
    models: list[ModelRef]
    if model is None:
        models = [None]
    elif isinstance(model, str | Path):
        models = [model]
    else:
        models = list(model) or [None]
    return models + list(compare or ())


@dataclass(frozen=True)
class _Settings:
    """What every dataset of one ``evaluate`` run is measured with."""

    n_resamples: int
    seed: int
    min_group_size: int
    device: str
    progress: ProgressFactory


def _evaluate_models(models: Sequence[ModelRef], chosen: EvaluationSet, dataset: Path, cropped: bool, out: Path,
                     st: _Settings) -> tuple[list[ModelEvaluation], list[Path], float | None]:
    """Run every model over ``chosen``; each one's folder is ``out`` for the first and
    ``out/compare/<n>-<name>/`` for the others (written by :func:`_write`)."""
    evals: list[ModelEvaluation] = []
    folders: list[Path] = []
    interval = None
    labels: set[str] = set()
    for i, m in enumerate(models):
        frame, info, interval = run_model(chosen.records, m, cropped=cropped, progress=st.progress, device=st.device)
        metrics = compute_metrics(frame, n_resamples=st.n_resamples, seed=st.seed, min_group_size=st.min_group_size)
        metrics["model"] = info
        metrics["run"] = {"dataset": str(dataset), "format": chosen.format, "selection": chosen.note,
                          "cropped": cropped, "interval_level": interval, "bootstrap_resamples": st.n_resamples,
                          "seed": st.seed}
        label = f"{info['name']} {info['version']}"
        if label in labels:
            label = f"{label} ({i + 1})"
        labels.add(label)
        evals.append(ModelEvaluation(label, frame, metrics, info))
        folders.append(out if i == 0 else out / "compare" / f"{i}-{_slug(label)}")
    return evals, folders, interval


def _write(evals: Sequence[ModelEvaluation], folders: Sequence[Path]) -> None:
    """Each model's predictions.csv and metrics.json into its folder."""
    for ev, folder in zip(evals, folders, strict=True):
        write_outputs(folder, ev.predictions, ev.metrics)


def domain_name(dataset: Path) -> str:
    """The name a ``--domain`` dataset goes by in metrics.json and folders: its folder or file name."""
    return _slug(dataset.name.split(".")[0] or str(dataset))


def evaluate_dataset(
    dataset: Path,
    model: ModelRef | Sequence[str | Path] = None,
    split: str = "test",
    split_file: Path | None = None,
    cropped: bool = False,
    out: Path = Path("out/evaluation"),
    limit: int | None = None,
    format: str | None = None,
    compare: Sequence[str | Path] | None = None,
    *,
    domains: Sequence[Path] = (),
    domain_split: str = "val",
    device: str = "auto",
    n_resamples: int = 1000,
    seed: int = 0,
    gallery_size: int = 12,
    min_group_size: int = 10,
    progress: ProgressFactory = no_progress,
) -> EvaluationRun:
    """Evaluate one model (or several with ``compare``) and write predictions, metrics and report.html.

    ``model`` None means the bundled default model. Fairness gaps compare only groups with at least
    ``min_group_size`` evaluated images.

    The first model's ``predictions.csv`` and ``metrics.json`` go straight into ``out``; each compared
    model's go into ``out/compare/<n>-<name>/``; ``out/report.html`` covers them all side by side.

    ``domains`` are other datasets the same models are measured on, out of the training domain: whole
    photos (never ``cropped``), the ``domain_split`` of each one's own ``splits/<format>.csv`` (all records
    when it has none), written to ``out/domains/<name>/`` like the main dataset, and summarised under
    ``domains`` in each model's main ``metrics.json`` and report (what the release rule reads).

    Raises:
        BundleError: a bundle does not load (checked before any image is read).
        UserError: a dataset, split or selection is unusable (every dataset is checked before any image is read).
    """
    models = _bundles(model, compare)
    for m in models:  # a bad bundle should fail before minutes of reading and detection
        ModelBundle.load(m)
    chosen = select_records(Path(dataset), format=format, split=split, split_file=split_file, limit=limit,
                            seed=seed)
    others = [(Path(d), select_records(Path(d), split=domain_split, limit=limit, seed=seed)) for d in domains]
    names = [domain_name(d) for d, _ in others]
    if len(set(names)) != len(names):
        raise InvalidValueError(f"--domain: two datasets share a name ({', '.join(names)}); rename a folder")
    st = _Settings(n_resamples, seed, min_group_size, device, progress)
    evals, folders, interval = _evaluate_models(models, chosen, Path(dataset), cropped, out, st)
    _write(evals, folders)  # on disk before the other datasets take their turn
    domain_runs = []
    for name, (path, picked) in zip(names, others, strict=True):
        where = out / "domains" / name
        d_evals, d_folders, d_interval = _evaluate_models(models, picked, path, False, where, st)
        _write(d_evals, d_folders)
        d_ctx = ReportContext(dataset=str(path), split_note=picked.note, cropped=False, interval_level=d_interval)
        d_report = write_report(where / "report.html", d_evals, d_ctx, gallery_size=gallery_size, load=_load_image)
        domain_runs.append(DomainRun(name, path, picked.format, picked.note, d_evals, d_folders, d_report))
        for main, other in zip(evals, d_evals, strict=True):
            main.metrics.setdefault("domains", {})[name] = {
                "dataset": str(path), "selection": picked.note,
                "report": d_report.relative_to(out).as_posix(), **domain_summary(other.metrics)}
    if domain_runs:  # each model's metrics.json again, now with its domains entry
        for main, folder in zip(evals, folders, strict=True):
            write_metrics(folder, main.metrics)
    ctx = ReportContext(dataset=str(dataset), split_note=chosen.note, cropped=cropped,
                        interval_level=interval)
    report = write_report(out / "report.html", evals, ctx, gallery_size=gallery_size, load=_load_image)
    return EvaluationRun(Path(dataset), chosen.format, chosen.note, evals, folders, report, domain_runs)


def _load_image(path: str) -> np.ndarray:
    from facial_demographics.datasets.utkface import read_bytes, split_archive_path
    from facial_demographics.imaging import read_image

    return read_image(read_bytes(path), name=path) if split_archive_path(path) else read_image(path)
