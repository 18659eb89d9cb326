"""``models``: the model names ``--model`` takes, and which are installed."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def models() -> None:
    """List the model names --model takes (default, fast, fp32, seed), whether each is installed, and what it is."""
    from ..registry import list_models

    table = Table(title="Models (--model NAME, or --model PATH for a bundle directory)")
    for col in ("name", "installed", "precision", "flip TTA", "size", "val MAE", "val gender"):
        table.add_column(col, justify="right" if col in ("size", "val MAE", "val gender") else "left", no_wrap=True)
    rows = list_models()
    for m in rows:
        own = m.validation or {}
        mae, gender = own.get("mae"), own.get("gender_accuracy")
        table.add_row(
            m.name, "yes" if m.installed else "no", m.precision or "", "" if m.tta_flip is None else
            ("yes" if m.tta_flip else "no"), f"{m.size_bytes / 1e6:.1f} MB" if m.size_bytes else "",
            f"{mae:.2f}" if mae is not None else "", f"{100 * gender:.1f} %" if gender is not None else "")
    console = Console()
    console.print(table)
    for m in rows:
        console.print(f"[bold]{m.name}[/bold]: {m.summary}" + ("" if m.installed else f". {m.note}"),
                      highlight=False)
