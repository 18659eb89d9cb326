"""``serve``: its options are made from :class:`~facial_demographics.server.settings.ServerSettings`.

The settings dataclass is the one place for each option's name, default, unit and help; this module
only turns its fields into typer options (each also read from ``$FD_<OPTION>``), so a new setting is
settable from the command line and the environment without being written down a second time.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from ..server.settings import ServerSettings
from ._common import EXIT_USAGE, err, user_errors

_MB = 1024 * 1024


def _option_type(f: Field[Any], hints: dict[str, Any]) -> Any:
    """The option's Python type: the field's, in the option's unit (megabytes are floats), optional."""
    if f.metadata.get("scale", 1) != 1:
        return float
    kind = hints[f.name]
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if f.name == "cors_origins":
        return list[str]
    return args[0] if args else kind


def _default_text(f: Field[Any]) -> str:
    value = f.default if f.default is not MISSING else None
    scale = f.metadata.get("scale", 1)
    if value in (None, ()):
        return ""
    return f" (default {value / scale:g})" if scale != 1 else f" (default {value})"


def _parameter(f: Field[Any], hints: dict[str, Any]) -> inspect.Parameter:
    name = f.metadata.get("cli") or f.name
    flags = [f"--{name.replace('_', '-')}", *(["-m"] if name == "model" else [])]
    option = typer.Option(*flags, envvar=f"FD_{name.upper()}", help=f.metadata.get("help", "") + _default_text(f),
                          show_default=False, metavar="ORIGIN" if name == "cors_origin" else None)
    annotation = Annotated[_option_type(f, hints) | None, option]  # type: ignore[operator,valid-type]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def _serve(**values: Any) -> None:
    """Serve the web page (/) and the REST API (/v1/analyze, /v1/model, /healthz, /docs)."""
    try:
        from ..server import serve_command
    except ImportError as exc:
        err.print(f"The server needs the 'serve' extra: pip install 'facial-demographics[serve]' ({exc})",
                  style="red", markup=False)
        raise typer.Exit(EXIT_USAGE) from exc
    with user_errors("Cannot start the server:"):
        serve_command(ServerSettings.create(**values))


def make_serve_command() -> Any:
    """``_serve`` with one keyword option per settings field (typer reads ``__signature__``)."""
    hints = typing.get_type_hints(ServerSettings, localns={"Path": Path})
    params = [_parameter(f, hints) for f in fields(ServerSettings)]
    _serve.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return _serve
