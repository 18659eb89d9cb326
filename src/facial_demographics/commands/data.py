"""``data prepare | stats | split``: dataset tools."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..datasets.formats import FORMATS, LABELS_FILE, LABELS_HELP
from ._common import err, need_extra, progress_bar, user_errors
from .examples import examples

data_app = typer.Typer(help="Dataset tools: statistics, splits and the aligned-face cache.", no_args_is_help=True)
DatasetArg = Annotated[Path, typer.Argument(help=(
    f"Your labelled photos: {LABELS_HELP} (or a folder holding it as {LABELS_FILE}). Also a UTKFace folder or "
    ".tar.gz, a folder of MORPH mugshots (PPPPPP_NN{M|F}AA.JPG), or an IMDB-WIKI .mat."))]
FormatOption = Annotated[str | None, typer.Option(
    "--format", help=f"{' | '.join(FORMATS)} (default: detected)")]


@data_app.command("prepare", epilog=examples("data prepare"))
def data_prepare(
    datasets: Annotated[list[Path], typer.Argument(help=(
        f"Your labelled photos: {LABELS_HELP} (or a folder holding it as {LABELS_FILE}); also a UTKFace folder, "
        "a MORPH folder or an IMDB-WIKI .mat. Several make one cache, e.g. UTKFace and MORPH to train on both "
        "(record keys must differ between them)."))],
    size: Annotated[int, typer.Option("--size", min=16, help="Aligned face size in pixels.")] = 112,
    out: Annotated[Path | None, typer.Option("--out", help="Cache directory (default cache/<name>-<size>).")] = None,
    margin: Annotated[float, typer.Option("--margin", help="Alignment margin (see alignment).")] = 0.0,
    template: Annotated[str, typer.Option("--template", help=(
        "Alignment template (with --no-align: the framing the crops already have, used at inference)."))] = "utkface5",
    fmt: FormatOption = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Processes (default: all cores).")] = None,
    align: Annotated[bool, typer.Option("--align/--no-align", help=(
        "--no-align: no detection or alignment, each image (a face crop, e.g. UTKFace's own 200x200) is "
        "just resized to --size, as the seed report fed it."))] = True,
) -> None:
    """Detect and align every image once into a memory-mappable cache (resumable)."""
    need_extra("data")
    from ..alignment import AlignmentConfig
    from ..datasets.cache import prepare_cache
    from ..datasets.loader import load_datasets

    with user_errors():
        reads = load_datasets(datasets, fmt)
        cfg = AlignmentConfig(size=size, margin=margin, template=template)
    records = [r for read in reads for r in read.records]
    for read in reads:
        for rej in read.rejected:
            err.print(f"[yellow]rejected {escape(read.source)}: {escape(rej.item)}: {escape(rej.reason)}[/yellow]")
    name = "+".join(d.name.split(".")[0] for d in datasets)
    target = out or Path("cache") / f"{name}-{'' if align else 'raw'}{size}"
    started = time.perf_counter()
    with user_errors(), progress_bar("Aligning faces" if align else "Resizing crops", len(records)) as advance:
        cache = prepare_cache(records, target, cfg, workers=workers, dataset=",".join(map(str, datasets)),
                              progress=advance, align=align)
    counts = cache.meta["status_counts"]
    elapsed = time.perf_counter() - started
    for dataset, read in zip(datasets, reads, strict=True):
        typer.echo(f"{dataset}: {read.seen} items seen = {len(read.records)} records + {len(read.rejected)} rejected")
    typer.echo(f"cache {target}: {len(cache.index)} faces " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    typer.echo(f"{elapsed:.0f} s, {len(records) / max(elapsed, 1e-9):.0f} images/s (resumed work not counted)")
    for _, row in cache.index[cache.index["status"] == "unreadable"].iterrows():
        err.print(f"[yellow]unreadable {row['path']}: {row['error']}[/yellow]")


@data_app.command("descriptors", epilog=examples("data descriptors"))
def data_descriptors(
    cache: Annotated[Path, typer.Argument(help="Aligned-face cache folder (from 'data prepare', aligned).")],
    out: Annotated[Path | None, typer.Option("--out", help="Write here (default: the cache folder).")] = None,
    root: Annotated[Path | None, typer.Option("--root", help=(
        "Folder the index's relative image paths start from (default: the working directory, as for "
        "'data prepare')."))] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Processes (default: all cores).")] = None,
) -> None:
    """dlib's 128-d face descriptor for every cached face (a training-time teacher; resumable)."""
    need_extra("teacher")
    from ..datasets.cache import load_cache
    from ..datasets.descriptors import compute_descriptors

    with user_errors():
        total = len(load_cache(cache).index)
    started = time.perf_counter()
    with user_errors(), progress_bar("Describing faces", total) as advance:
        run = compute_descriptors(cache, out=out, root=root, workers=workers, progress=advance)
    elapsed = time.perf_counter() - started
    done_here = run.count - run.resumed
    typer.echo(f"{run.path}: {run.count} rows, {run.computed} descriptors, {len(run.failures)} without one "
               f"(NaN); provenance in {run.provenance}")
    typer.echo(f"{elapsed:.0f} s, {done_here / max(elapsed, 1e-9):.1f} rows/s (resumed work not counted)")
    for failure in run.failures[:20]:
        err.print(f"[yellow]no descriptor for row {failure.row} ({escape(failure.key)}): "
                  f"{escape(failure.reason)}[/yellow]")
    if len(run.failures) > 20:
        err.print(f"[yellow]... and {len(run.failures) - 20} more, listed in {escape(str(run.provenance))}[/yellow]")


@data_app.command("stats", epilog=examples("data stats"))
def data_stats(
    dataset: DatasetArg,
    out: Annotated[Path | None, typer.Option("--out", help="Write stats.json and a PNG histogram here.")] = None,
    fmt: FormatOption = None,
) -> None:
    """Counts, rejected items, age histogram, gender and race balance."""
    need_extra("data")
    from ..datasets.loader import load_dataset
    from ..datasets.stats import compute_stats, write_stats

    console = Console()
    with user_errors(), console.status(f"reading {dataset}"):
        result = load_dataset(dataset, format=fmt)
    stats = compute_stats(result)
    render_stats(stats, console)
    if out is not None:
        for path in write_stats(stats, out):
            console.print(f"wrote {path}")


@data_app.command("split", epilog=examples("data split"))
def data_split(
    dataset: DatasetArg,
    out: Annotated[Path, typer.Option("--out", help="Split CSV to write (key,split).")],
    val: Annotated[float, typer.Option("--val", help="Validation share.")] = 0.1,
    test: Annotated[float, typer.Option("--test", help="Test share.")] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 42,
    fmt: FormatOption = None,
) -> None:
    """Write a deterministic train/val/test split, stratified by age band and gender."""
    need_extra("data")
    from ..datasets.splits import publish_split

    with user_errors():
        counts = publish_split(dataset, out, val=val, test=test, seed=seed, format=fmt)
    typer.echo(f"wrote {out}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))


def _counts_table(title: str, counts: dict[str, int], total: int | None = None) -> Table:
    table = Table(title=title)
    table.add_column(title.split(" ")[0].lower())
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    whole = total if total is not None else sum(counts.values())
    for name, n in counts.items():
        table.add_row(escape(str(name)), str(n), f"{100 * n / whole:.1f} %" if whole else "-")
    return table


def _items_table(title: str, summary: dict[str, Any]) -> Table:
    from ..datasets.stats import EXAMPLES, reason_category

    table = Table(title=f"{title} ({summary['count']})")
    table.add_column("reason")
    table.add_column("count", justify="right")
    table.add_column("examples")
    for reason, n in summary["by_reason"].items():
        examples = [i for i in summary["items"] if reason_category(i["reason"]) == reason][:EXAMPLES]
        table.add_row(escape(reason), str(n),
                      "\n".join(escape(f"{i['item']}: {i['reason']}") for i in examples))
    return table


def render_stats(stats: dict[str, Any], console: Console) -> None:
    """Print the statistics as rich tables."""
    from ..datasets.stats import GENDER_KEYS

    age = stats["age"]
    rng = age["in_range"]
    console.print(f"[bold]{escape(stats['source'])}[/]: {stats['seen']} seen, {stats['used']} used, "
                  f"{stats['rejected']['count']} rejected, "
                  f"{stats['partly_malformed']['count']} used with a partly malformed entry")
    if age["known"]:
        console.print(f"ages {age['min']:g}..{age['max']:g}, mean {age['mean']:g}, median {age['median']:g}; "
                      f"{100 * rng['share']:.1f} % of known ages between {rng['lo']} and {rng['hi']}")
    for title, key in (("Rejected", "rejected"), ("Partly malformed, used", "partly_malformed")):
        summary = stats[key]
        if summary["count"]:
            console.print(_items_table(title, summary))
    gender = {g: stats["gender"][g] for g in GENDER_KEYS}
    console.print(_counts_table("Gender", gender))
    console.print(_counts_table("Age buckets (seed report)", age["buckets5"]))
    console.print(_counts_table("Age bands", age["bands"]))
    if stats["race"]:
        console.print(_counts_table("Race", stats["race"]))
    for name, counts in stats["groups"].items():
        console.print(_counts_table(f"{name} (group)", counts))
