"""``summarize``: the population summary of ``analyze`` results (and the shared printing for ``analyze
--summary``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ._common import BandsOption, IntervalOption, ModelOption, err, need_extra, user_errors

if TYPE_CHECKING:
    from ..model import ModelBundle
    from ..population import PopulationSummary
    from ..population.records import ResultSet


def summary_table(summary: PopulationSummary) -> Table:
    """The terminal table: one row per band, share with interval and count, then female / male."""
    unit = "people" if summary.people is not None else "faces"
    table = Table(title=f"Population: {summary.units} {unit}, {summary.interval * 100:.0f} % intervals "
                        f"({summary.method})")
    gendered = bool(summary.age_gender)
    for col in ("band", "share", "interval", "count", *(("female", "male") if gendered else ())):
        table.add_column(col, justify="left" if col == "band" else "right")

    def pct(share: float) -> str:
        return f"{share * 100:.1f} %"

    for b, name in enumerate(summary.bands.names):
        s = summary.age[b]
        row = [name, pct(s.share), f"{s.low * 100:.1f}–{s.high * 100:.1f}", f"{s.count:.1f}"]
        if gendered:
            row += [f"{summary.age_gender[b][1].count:.1f}", f"{summary.age_gender[b][0].count:.1f}"]
        table.add_row(*row)
    if gendered:
        male, female = summary.gender
        table.add_row("all", "100 %", "", str(summary.units),
                      f"{pct(female.share)} ({female.low * 100:.1f}–{female.high * 100:.1f})",
                      f"{pct(male.share)} ({male.low * 100:.1f}–{male.high * 100:.1f})", end_section=True)
    return table


def summarize_results(results: ResultSet, out: Path, bundle: ModelBundle, bands: str | None,
                      interval: float, title: str, unique: bool = False) -> PopulationSummary:
    """Estimate from what was read with ``bundle``'s population calibration, write the four files to ``out``
    and print the table and counts.

    Raises:
        UserError: bad bands, or ``out`` cannot be written.
    """
    from ..population import AgeBands
    from ..population.records import calibration_of, estimate_results
    from ..population.report import write_summary

    parsed = AgeBands.parse(bands)
    summary = estimate_results(results, parsed, calibration_of(bundle), interval, unique=unique)
    try:
        paths = write_summary(summary, out, title)
    except OSError as exc:
        from ..output import OutputError

        raise OutputError(f"{out}: cannot write the summary here ({exc.strerror or exc})") from None
    err.print(summary_table(summary))
    notes = [f"{results.images} images", f"{summary.faces} faces", f"{results.errors} unreadable",
             f"{results.no_face} without a face"]
    if summary.people is not None:
        notes.insert(2, f"{summary.people} different people")
    if results.broken_lines:
        notes.append(f"{results.broken_lines} broken lines skipped")
    err.print(f"summary of {', '.join(notes)}: {', '.join(str(p) for p in paths)}", highlight=False)
    return summary


def summarize(
    results: Annotated[list[Path], typer.Argument(metavar="RESULTS.jsonl...",
                                                  help="What 'analyze -f jsonl' (or -f json) wrote; several files "
                                                       "are one population.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for summary.json, summary.csv, pyramid.png "
                                                           "and report.html.")],
    bands: BandsOption = None,
    interval: IntervalOption = 0.9,
    model: ModelOption = None,
    unique: Annotated[bool, typer.Option(
        "--unique", help="Count each person once across the photos (results written by 'analyze --unique').")] = False,
) -> None:
    """Estimate how many people of each age band and gender the analysed photos hold, with intervals.

    Reads each face's age distribution and gender probability and corrects for the model's own confusion
    (the --model that analysed them supplies it; default: the default model). Broken lines are counted and
    skipped; images that could not be read or hold no face are counted in the summary.
    """
    need_extra("data")
    from ..model import ModelBundle
    from ..population.records import read_results

    with user_errors():
        found = read_results(results)
        title = f"Population summary of {len(results)} file{'s' * (len(results) != 1)}"
        summarize_results(found, out, ModelBundle.load(model), bands, interval, title, unique=unique)
