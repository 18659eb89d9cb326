"""The README and the docs stay true: every snippet marked runnable runs on small inputs made here, every
relative link points at a file that exists, and the README stays a short introduction."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from docs_support import MARKER, ROOT, pages, run, snippets, workspace

#: Run by tests/test_own_data.py, which checks what each step wrote.
OWN_DATA = ROOT / "docs" / "own-data.md"
_LINK = re.compile(r"(?<!`)\[[^\]]*\]\(([^)\s]+)\)")


def _runnable_pages() -> list[Path]:
    return [p for p in pages() if p != OWN_DATA and snippets(p)]


@pytest.mark.parametrize("page", _runnable_pages(), ids=lambda p: p.name)
def test_runnable_snippets_run(page: Path, tmp_path: Path, astronaut: np.ndarray) -> None:
    cwd = workspace(tmp_path, astronaut)
    for snippet in snippets(page):
        done = run(snippet, cwd)
        assert done.returncode == 0, f"{page.name}:\n{snippet.code}\n--- stderr ---\n{done.stderr[-3000:]}"


def test_snippets_are_found() -> None:
    """Each marker is followed by a bash or python block (a typo would silently run nothing)."""
    for page in pages():
        assert page.read_text(encoding="utf-8").count(MARKER) == len(snippets(page)), page.name
    assert sum(len(snippets(p)) for p in pages()) >= 6


def _strip_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.DOTALL)


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_strip_code(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # web addresses; anchors are checked by mkdocs build --strict
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"


def test_readme_is_a_short_introduction() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 300
    head = "\n".join(lines[:60])
    assert "non-commercial" in head.lower() and "facial-demographics analyze" in head
    assert "curl " in text and "![" in text
    assert not re.search(r"\bissue \d+", text, re.IGNORECASE)
    assert "scripts/run.sh" in text and "scripts/test.sh" in text
