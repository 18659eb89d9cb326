"""``export``: a checkpoint to a model bundle, and a float bundle to an INT8 one (``--quantize int8``)."""

from __future__ import annotations

import tempfile
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..errors import InvalidValueError
from ._common import err, need_extra, user_errors

if TYPE_CHECKING:
    from ..training.quantize import QuantizeReport


class Precision(str, Enum):
    int8 = "int8"


class CalibrationSplit(str, Enum):
    train = "train"
    val = "val"


def _comparison_table(report: QuantizeReport) -> Table:
    """Both graphs side by side on the comparison split."""
    ref, q = report.reference, report.quantized
    table = Table(title=f"{report.split} split, {report.faces} cached faces (calibration: {report.calibration_faces} "
                        f"{report.calibration_split} faces)")
    table.add_column("")
    table.add_column(f"fp32{' + flip TTA' if report.source_tta else ''} (source)", justify="right")
    table.add_column(f"int8{' + flip TTA' if report.tta_flip else ', no TTA'}", justify="right")
    table.add_column("difference", justify="right")

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.2f} %"

    gender_diff = ("–" if ref.gender_accuracy is None or q.gender_accuracy is None
                   else f"{100 * (q.gender_accuracy - ref.gender_accuracy):+.2f} pt")
    table.add_row("age MAE (years)", f"{ref.mae:.3f}", f"{q.mae:.3f}", f"{q.mae - ref.mae:+.3f}")
    table.add_row("gender accuracy", pct(ref.gender_accuracy), pct(q.gender_accuracy), gender_diff)
    table.add_row("80 % interval coverage", pct(ref.interval_coverage), pct(q.interval_coverage),
                  f"{100 * (q.interval_coverage - ref.interval_coverage):+.2f} pt")
    table.add_row("faces/s, batch 64 (now, this machine)", f"{ref.faces_per_s:,.0f}", f"{q.faces_per_s:,.0f}",
                  f"{q.faces_per_s / ref.faces_per_s:.2f}×")
    table.add_row("model file", f"{report.source_bytes / 1e6:.1f} MB", f"{report.onnx_bytes / 1e6:.1f} MB", "")
    return table


def _export_checkpoint(ckpt: Path, out: Path, cache: Path | None, split: Path, calibrate: bool, opset: int,
                       name: str | None = None) -> None:
    from ..model import ModelBundle
    from ..training.calibrate import calibrate_bundle, calibrate_gender
    from ..training.export import export_bundle

    report = export_bundle(ckpt, out, cache=cache, opset=opset, name=name)
    typer.echo(f"exported {report.bundle} ({report.onnx_bytes / 1e6:.2f} MB); max |torch - onnxruntime| on "
               f"{report.faces} faces: {report.max_abs_diff:.2e}")
    if calibrate and cache is not None:
        cal = calibrate_bundle(report.bundle, cache, split)
        temps = ", ".join(f"{t:g}" for t in cal.band_temperatures) or f"{cal.temperature:g}"
        typer.echo(f"age interval calibrated on {cal.faces} validation faces: temperature(s) {temps}, "
                   f"coverage {cal.coverage_before:.3f} -> {cal.coverage_after:.3f}")
        if ModelBundle.load(report.bundle).spec.gender is not None:
            gender = calibrate_gender(report.bundle, cache, split)
            typer.echo("gender calibrated per predicted-age band: temperatures " + ", ".join(
                f"{f.band} {f.temperature:g}" for f in gender.bands))


def export(
    source: Annotated[str, typer.Argument(
        metavar="SOURCE",
        help="A training checkpoint (best.pt or last.pt), or a float model bundle to quantise or strip of flip "
             "TTA (a name such as 'fp32', or a bundle directory).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write.")],
    cache: Annotated[Path | None, typer.Option(
        "--cache", help="Aligned-face cache: faces for the parity check, interval calibration and quantisation.")
    ] = None,
    split: Annotated[Path | None, typer.Option(
        "--split", help="Split CSV: its val part calibrates the age interval and compares the graphs (default: "
        "the cache's split.csv, which 'train' makes, else splits/utkface.csv).")] = None,
    calibrate: Annotated[bool, typer.Option(
        help="Fit the age-interval temperature on the validation split (checkpoints; needs --cache).")] = True,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset.")] = 17,
    quantize: Annotated[Precision | None, typer.Option(
        "--quantize",
        help="Static INT8 quantisation (ONNX Runtime, QDQ, per-channel); needs --cache.")] = None,
    tta: Annotated[bool | None, typer.Option(
        "--tta/--no-tta", help="Keep or remove the flip test-time augmentation (default: as trained).")] = None,
    calibration_split: Annotated[CalibrationSplit, typer.Option(
        "--calibration-split", help="Where the INT8 calibration faces come from (never test).")
    ] = CalibrationSplit.train,
    calibration_faces: Annotated[int, typer.Option(
        "--calibration-faces", min=8, help="INT8 calibration faces (a seeded sample).")] = 200,
    name: Annotated[str | None, typer.Option("--name", help="The new bundle's name (default: the source's).")] = None,
) -> None:
    """Export a checkpoint to an ONNX model bundle (checked against torch on real faces), or make an INT8
    or TTA-free bundle from a float one, printing both graphs' accuracy on the validation split."""
    checkpoint = Path(source).is_file()
    need_extra("train" if checkpoint else "quantize")
    from ..training.autosplit import split_beside

    split = split_beside(cache, split)
    with user_errors():
        if quantize is not None and cache is None:
            raise InvalidValueError("--quantize needs --cache (calibration and comparison faces)")
        if not checkpoint and quantize is None and tta is not False:
            raise InvalidValueError(f"{source} is a bundle (or not a checkpoint file): give --quantize int8 and/or "
                                   "--no-tta to derive a bundle from it")
        if checkpoint and quantize is None and tta is None:
            _export_checkpoint(Path(source), out, cache, split, calibrate, opset, name)
            return
        with tempfile.TemporaryDirectory(prefix="fd-export-") as tmp:
            bundle_ref = source
            if checkpoint:
                bundle_ref = str(Path(tmp) / "fp32")
                _export_checkpoint(Path(source), Path(bundle_ref), cache, split, calibrate, opset)
            _derive(bundle_ref, out, cache, split, quantize is not None, tta, calibration_split.value,
                    calibration_faces, name)


def _derive(source: str, out: Path, cache: Path | None, split: Path, quantize: bool, tta: bool | None,
            calibration_split: str, calibration_faces: int, name: str | None) -> None:
    """Quantise and/or strip the flip TTA of a float bundle, and say what came out."""
    from ..model import ModelBundle
    from ..training.quantize import quantize_bundle, strip_tta_bundle

    bundle = ModelBundle.load(source)
    if not quantize:
        written = strip_tta_bundle(bundle, out, name=name)
        typer.echo(f"wrote {written} (fp32, flip TTA removed)")
        return
    assert cache is not None
    with err.status("quantising") as status:
        report = quantize_bundle(bundle, out, cache, split, tta_flip=tta, calibration_split=calibration_split,
                                 calibration_count=calibration_faces, name=name,
                                 progress=lambda s: status.update(f"quantising: {s}"))
    err.print(_comparison_table(report))
    if bundle.spec.gender is not None and bundle.spec.gender.temperatures:
        from ..training.calibrate import calibrate_gender

        # The source's gender temperatures were fitted to its own logits: refit them to the new graph's.
        gender = calibrate_gender(report.bundle, cache, split)
        typer.echo("gender recalibrated per predicted-age band: temperatures " + ", ".join(
            f"{f.band} {f.temperature:g}" for f in gender.bands))
    typer.echo(f"wrote {report.bundle} (int8, {report.onnx_bytes / 1e6:.1f} MB, flip TTA "
               f"{'kept' if report.tta_flip else 'removed'}); the manifest records the comparison")
