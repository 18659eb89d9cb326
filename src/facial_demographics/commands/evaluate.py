"""``evaluate``, ``evaluate-detection`` and ``robustness``: how good the models are."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ..datasets.formats import FORMATS
from ..errors import InvalidValueError
from ._common import Device, DeviceOption, ModelOption, err, need_extra, progress_bar, user_errors

if TYPE_CHECKING:
    from ..evaluation.evaluate import EvaluationRun
    from ..evaluation.robustness import RobustnessRun


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f} %" if pct else f"{value:.2f}"


def _print_evaluation(run: EvaluationRun) -> None:
    err.print(f"[bold]Dataset[/] {run.dataset} ({run.format}): {run.selection}")
    for ev, folder in zip(run.evaluations, run.folders, strict=True):
        m, c = ev.metrics, ev.metrics["counts"]
        err.print(
            f"[bold]{ev.label}[/]: MAE {_fmt(m['mae'])} years, gender accuracy "
            f"{_fmt(m['gender_accuracy'], pct=True)}, interval coverage "
            f"{_fmt(m['interval_coverage'], pct=True)} — {c['evaluated']}/{c['images']} evaluated, "
            f"{c['no_face']} no face, {c['fallback']} fallback, {c['unreadable']} unreadable → {folder}")
        race = m["gaps"].get("race", {})
        if race.get("mae", {}).get("gap") is not None:
            err.print(f"  race MAE spread {_fmt(race['mae']['gap'])} years, age-standardised "
                      f"{_fmt(race['mae_age_std']['gap'])}")
        bands = m.get("gender_by_age_band", {})
        if bands:
            err.print("  gender by age: " + ", ".join(
                f"{b} {_fmt(v['gender_accuracy'], pct=True)} (ECE {_fmt(v['gender_ece'])})"
                for b, v in bands.items() if v["n"]))
    for d in run.domains:
        err.print(f"[bold]Out of domain: {d.name}[/] ({d.format}): {d.selection}")
        for ev, folder in zip(d.evaluations, d.folders, strict=True):
            m = ev.metrics
            recall = m.get("gender_recall") or {}
            err.print(f"  {ev.label}: MAE {_fmt(m['mae'])}, bias {_fmt(m['bias'])}, interval coverage "
                      f"{_fmt(m['interval_coverage'], pct=True)}, gender men {_fmt(recall.get('male'), pct=True)} "
                      f"/ women {_fmt(recall.get('female'), pct=True)} → {folder}")
    err.print(f"Report: {run.report}")


def evaluate(
    dataset: Annotated[Path, typer.Option("--dataset", help="Labelled dataset: UTKFace folder or .tar.gz, "
                                          "IMDB-WIKI .mat, or a .csv/.parquet table.")],
    model: ModelOption = None,
    split: Annotated[str, typer.Option("--split", help="train | val | test")] = "test",
    split_file: Annotated[Path | None, typer.Option(
        "--split-file", help="key,split CSV (default: splits/<format>.csv when present, else all records).")] = None,
    cropped: Annotated[bool, typer.Option("--cropped", help="Each image is one cropped face (UTKFace).")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for predictions.csv, metrics.json, report.html.")] = Path(
        "out/evaluation"),
    compare: Annotated[list[str] | None, typer.Option(
        "--compare", metavar="NAME|PATH",
        help="Another model (name or bundle) to evaluate on the same images (repeat for more).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="A seeded random sample of N images.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help=" | ".join(FORMATS))] = None,
    domain: Annotated[list[Path] | None, typer.Option(
        "--domain", metavar="DATASET",
        help="Another dataset to measure the same models on, out of domain (whole photos, its own "
             "splits/<format>.csv): e.g. a MORPH folder. Repeatable; in metrics.json under 'domains'.")] = None,
    domain_split: Annotated[str, typer.Option("--domain-split", help="The --domain datasets' split.")] = "val",
    device: DeviceOption = Device.auto,
) -> None:
    """Evaluate a model on a labelled split: accuracy, fairness and trust, in a self-contained report."""
    need_extra("data")
    from ..evaluation.evaluate import evaluate_dataset

    with user_errors():
        run = evaluate_dataset(dataset, model, split, split_file, cropped, out, limit, fmt, compare,
                               domains=domain or (), domain_split=domain_split, device=device.value,
                               progress=progress_bar)
    _print_evaluation(run)


def evaluate_detection(
    dataset: Annotated[Path | None, typer.Option(
        "--dataset", help="UTKFace folder or archive: the faces to paste into generated scenes.")] = None,
    annotations: Annotated[list[Path] | None, typer.Option(
        "--annotations", metavar="PATH",
        help="Real photos instead: a PASCAL VOC folder, COCO .json, WIDER FACE .txt or dlib imglab .xml "
             "(repeat for more).")] = None,
    images: Annotated[Path | None, typer.Option(
        "--images", help="Folder of the annotated photos (default: beside each annotation file).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and report.html.")] = Path(
        "out/detection"),
    scenes: Annotated[int, typer.Option("--scenes", min=1, help="How many scenes to generate.")] = 400,
    posters: Annotated[int | None, typer.Option(
        "--posters", min=0, help="Poster scenes (a group before a big face) added (default: a tenth of --scenes).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Scene seed: the same seed gives the same scenes.")] = 0,
    pool: Annotated[int, typer.Option("--pool", min=1, help="Development faces to sample from.")] = 300,
    split_file: Annotated[Path | None, typer.Option(
        "--split-file", help="key,split CSV; faces come from its train split (default splits/utkface.csv).")] = None,
    score_threshold: Annotated[float | None, typer.Option(
        "--score-threshold", min=0.0, max=1.0, help="Detector score threshold (default: the detector's).")] = None,
    pixel_budget: Annotated[int | None, typer.Option(
        "--pixel-budget", min=1024, help="Pixels of the main detection pass (more: smaller faces, slower).")] = None,
    single_scale: Annotated[bool, typer.Option(
        "--single-scale", help="The 0.2.0 detector: one pass at 960 px at most, for comparison.")] = False,
    device: DeviceOption = Device.auto,
) -> None:
    """Measure the face detector on generated scenes (--dataset) or annotated photos (--annotations):
    recall by face size, duplicates, false faces, time."""
    from ..detection import DetectorConfig

    with user_errors():
        if (dataset is None) == (not annotations):
            raise InvalidValueError("give either --dataset (generated scenes) or --annotations (real photos)")
        overrides: dict[str, Any] = {k: v for k, v in (("score_threshold", score_threshold),
                                                         ("pixel_budget", pixel_budget)) if v is not None}
        overrides["device"] = device.value
        config = DetectorConfig.single_scale(**overrides) if single_scale else DetectorConfig(**overrides)
        if annotations:
            _detection_on_photos(annotations, images, out, config)
            return
        assert dataset is not None
        need_extra("data")
        from ..evaluation.detection_eval import BenchmarkSettings, run_detection_benchmark, summary_line

        settings = BenchmarkSettings(scenes=scenes, seed=seed, pool_size=pool, poster_scenes=posters)
        err.print("choosing development faces…", highlight=False)
        m = run_detection_benchmark(dataset, out, settings, config, split_file, progress=progress_bar)
    err.print(f"face pool: {m['settings']['pool']} {settings.split} crops with a confident face", highlight=False)
    typer.echo(f"{summary_line(m)} → {out}")


def _detection_on_photos(annotations: list[Path], images: Path | None, out: Path, config: Any) -> None:
    """``evaluate-detection --annotations``: the detector on real photos (errors reach ``user_errors``)."""
    from ..evaluation.detection_eval import photo_summary_line, run_photo_benchmark

    if images is not None and not images.is_dir():
        raise InvalidValueError(f"{images}: --images is not a folder")
    m = run_photo_benchmark(annotations, images, out, config, progress=progress_bar)
    typer.echo(f"{photo_summary_line(m)} → {out}")


def _robustness_table(run: RobustnessRun) -> Table:
    table = Table(title=f"Robustness on {run.faces} {run.split} faces ({run.cache})")
    for col in ("model", "perturbation", "MAE", "gender acc", "|Δ age|", "flips"):
        table.add_column(col, justify="left" if col in ("model", "perturbation") else "right", no_wrap=True)
    for r in run.rows:
        table.add_row(r.model, r.perturbation, f"{r.mae:.2f}",
                      "-" if r.gender_accuracy is None else f"{100 * r.gender_accuracy:.1f} %",
                      f"{r.mean_age_shift:.2f}",
                      "-" if r.gender_flip_rate is None else f"{100 * r.gender_flip_rate:.1f} %")
    return table


def robustness(
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", metavar="NAME|PATH",
        help="Model name or bundle (repeat to compare; default: the bundled default model).")] = None,
    cache: Annotated[Path, typer.Option("--cache", help="Aligned-face cache at the model's input size.")] = Path(
        "cache/utkface-112"),
    split_file: Annotated[Path, typer.Option("--split-file", help="key,split CSV.")] = Path("splits/utkface.csv"),
    split: Annotated[str, typer.Option("--split", help="train | val | test")] = "val",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="A seeded random sample of N faces.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write robustness.json and robustness.png here.")] = None,
    device: DeviceOption = Device.auto,
) -> None:
    """How far ages and genders move under JPEG, blur, low resolution, sharpening and noise."""
    need_extra("data")
    from ..evaluation.robustness import run_robustness

    with user_errors(), err.status("robustness") as status:
        run = run_robustness(model or [None], cache, split_file, split, limit, out,
                             progress=lambda s: status.update(f"robustness: {s}"), device=device.value)
    err.print(_robustness_table(run))
    if run.written:
        err.print(f"wrote {' and '.join(str(p) for p in run.written)}")
