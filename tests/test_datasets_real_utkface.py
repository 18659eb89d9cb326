"""The UTKFace reader over the real shared folder: every file accounted for, every rejection explained."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facial_demographics.datasets.utkface import parse_name, read_utkface

UTKFACE_DIR = Path(os.environ.get("FD_UTKFACE_DIR",
                                  Path(__file__).resolve().parents[1].parent / "shared/datasets/UTKFace"))


@pytest.mark.slow
def test_real_utkface_accounts_for_every_file() -> None:
    if not UTKFACE_DIR.is_dir():
        pytest.skip(f"UTKFace not found at {UTKFACE_DIR} (set FD_UTKFACE_DIR)")
    files = {p.relative_to(UTKFACE_DIR).as_posix() for p in UTKFACE_DIR.rglob("*") if p.is_file()}
    result = read_utkface(UTKFACE_DIR)
    assert result.seen == len(files)
    assert {r.key for r in result.records} | {r.item for r in result.rejected} == files
    assert all(r.reason for r in result.rejected)
    # Every name with a problem is either rejected or listed as a note, with its reason.
    explained = {r.item for r in result.rejected} | {n.item for n in result.notes}
    odd = {key for key in files if parse_name(Path(key).name).problems}
    assert odd <= explained and all(n.reason for n in result.notes)
    assert all(r.age is not None and r.gender in (0, 1) for r in result.records)
