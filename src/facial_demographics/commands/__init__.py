"""The command line, kept apart from the library (as insightface's ``commands/``).

Each module holds the commands of one area; their bodies call domain functions that return data, and
print the results here. Expected failures (:class:`~facial_demographics.errors.UserError`) become one
line and exit code 2 (see :func:`._common.user_errors`); anything else is a bug and keeps its traceback.
Heavy imports happen inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from . import analyze, calibrate, evaluate, export, models, summarize, train, video
from .data import data_app
from .examples import examples
from .serve import make_serve_command

app = typer.Typer(
    help="Find every face in a photo and estimate its age (with an interval) and gender; "
    "train and evaluate your own models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # subcommands inherit it
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facial-demographics {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """facial-demographics: age and gender for every face in a photo."""


app.command(epilog=examples("analyze"))(analyze.analyze)
app.command(epilog=examples("summarize"))(summarize.summarize)
app.command(epilog=examples("demo"))(analyze.demo)
app.add_typer(data_app, name="data")
app.command(epilog=examples("evaluate"))(evaluate.evaluate)
app.command("evaluate-detection", epilog=examples("evaluate-detection"))(evaluate.evaluate_detection)
app.command(epilog=examples("robustness"))(evaluate.robustness)
app.command("serve", epilog=examples("serve"))(make_serve_command())
app.command(epilog=examples("train"))(train.train)
app.command(epilog=examples("export"))(export.export)
app.command(epilog=examples("calibrate"))(calibrate.calibrate)
app.command("models", epilog=examples("models"))(models.models)
app.command("compare-runs", epilog=examples("compare-runs"))(train.compare_runs)
app.command(epilog=examples("video"))(video.video)

__all__ = ["app"]
