"""MkDocs hook: MODEL_CARD.md and CHANGELOG.md live at the repository root, where GitHub shows them; the site
includes them as docs/model-card.md and docs/changelog.md (each holds only an ``include:`` line). Their links
are written for the root, so ``](docs/x)`` becomes ``](x)``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_INCLUDE = re.compile(r"^<!-- include: (\S+) -->\s*$", re.MULTILINE)
_ROOT_LINK = re.compile(r"\]\(docs/")
_ROOT = Path(__file__).resolve().parents[1]


def _included(match: re.Match[str]) -> str:
    return _ROOT_LINK.sub("](", (_ROOT / match.group(1)).read_text(encoding="utf-8"))


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace each ``<!-- include: FILE -->`` line with FILE (from the repository root), links fixed."""
    return _INCLUDE.sub(_included, markdown)
