"""``calibrate``: refit a bundle's age-interval and gender-probability calibration on the validation split."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..errors import InvalidValueError
from ._common import err, need_extra, user_errors

if TYPE_CHECKING:
    from ..training.calibrate import GenderCalibration


def _gender_table(cal: GenderCalibration) -> Table:
    table = Table(title=f"gender calibration on {cal.faces} validation faces (bands of the predicted age)")
    for col in ("band", "faces", "temperature", "ECE before", "ECE after"):
        table.add_column(col, justify="left" if col == "band" else "right")

    def ece(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    for f in cal.bands:
        table.add_row(f.band, str(f.faces), f"{f.temperature:g}", ece(f.ece_before), ece(f.ece_after))
    return table


def calibrate(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="A model bundle directory (changed in place "
                                           "unless --out is given).")],
    cache: Annotated[Path, typer.Option("--cache", help="Aligned-face cache at the bundle's input size.")],
    split: Annotated[Path | None, typer.Option("--split", help=(
        "Split CSV; its val part is used (default: the cache's split.csv, which 'train' makes, else "
        "splits/utkface.csv)."))] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write a calibrated copy here instead.")] = None,
    interval: Annotated[bool, typer.Option(help="Refit the age-interval temperature.")] = True,
    interval_bands: Annotated[bool, typer.Option(help=(
        "One interval temperature per predicted-age band (else one for all faces); a cache of several "
        "datasets weighs each the same."))] = True,
    gender: Annotated[bool, typer.Option(help="Refit the gender temperatures per predicted-age band.")] = True,
) -> None:
    """Fit the age interval (80 % coverage) and the gender probability per age band on validation faces, and
    write them into the bundle's manifest; the predictions themselves do not change."""
    need_extra("train")
    from ..training.autosplit import split_beside
    from ..training.calibrate import calibrate_bundle, calibrate_gender

    split = split_beside(cache, split)

    with user_errors():
        if not (bundle / "manifest.json").is_file():
            raise InvalidValueError(f"{bundle}: not a model bundle directory (no manifest.json)")
        if out is not None:
            if out.exists():
                raise InvalidValueError(f"{out}: already exists; choose a new folder")
            shutil.copytree(bundle, out)
            bundle = out
        if interval:
            cal = calibrate_bundle(bundle, cache, split, by_band=interval_bands)
            temps = (f"temperatures {', '.join(f'{t:g}' for t in cal.band_temperatures)} by predicted-age band"
                     if cal.band_temperatures else f"temperature {cal.temperature:g}")
            domains = ", ".join(f"{d or 'faces'} {v:.3f}" for d, v in cal.by_domain.items())
            typer.echo(f"age interval: {temps}; coverage {cal.coverage_before:.3f} -> {cal.coverage_after:.3f} "
                       f"on {cal.faces} validation faces ({domains})")
        if gender:
            err.print(_gender_table(calibrate_gender(bundle, cache, split)))
        typer.echo(f"wrote {bundle / 'manifest.json'}")
