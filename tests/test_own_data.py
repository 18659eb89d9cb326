"""A new user's path from a labelled CSV of their own photos to a trained, exported and evaluated model,
followed exactly as docs/own-data.md writes it (its runnable snippets, in order) on generated data; and the
split ``train`` makes itself when none is given."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from docs_support import ROOT, run, snippets, workspace

PAGE = ROOT / "docs" / "own-data.md"

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def followed(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """The workspace after every step of the page ran."""
    cwd = workspace(tmp_path_factory.mktemp("own-data"), astronaut)
    steps = snippets(PAGE)
    assert len(steps) >= 3
    for step in steps:
        done = run(step, cwd)
        assert done.returncode == 0, f"{step.code}\n--- stderr ---\n{done.stderr[-3000:]}"
    return cwd


def test_the_page_leads_to_an_evaluated_model(followed: Path) -> None:
    with (followed / "my_split.csv").open() as fh:
        splits = {row["split"] for row in csv.DictReader(fh)}
    assert splits == {"train", "val", "test"}
    assert (followed / "runs" / "mine" / "best.pt").is_file()
    assert json.loads((followed / "my_model" / "manifest.json").read_text())["heads"]["gender"]
    metrics = json.loads((followed / "my_eval" / "metrics.json").read_text())
    assert metrics["counts"]["evaluated"] >= 1 and metrics["mae"] is not None
    assert (followed / "my_eval" / "report.html").is_file()


def test_train_makes_a_split_when_none_is_given(followed: Path) -> None:
    """Run from any folder: no splits/utkface.csv there, yet `train --cache` works and says where the split is."""
    from docs_support import Snippet

    cmd = "facial-demographics train --config tiny --epochs 1 --max-steps 1 --cache cache/mine --out runs/auto"
    done = run(Snippet(PAGE, "bash", cmd), followed)
    assert done.returncode == 0, done.stderr[-3000:]
    made = followed / "cache" / "mine" / "split.csv"
    assert f"split: made {Path('cache/mine/split.csv')}" in done.stderr and made.is_file()
    with made.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 60 and {r["split"] for r in rows} == {"train", "val", "test"}
    identities = {f"photos/{i:03d}.jpg": f"person{i // 2}" for i in range(60)}  # the generator's pairs
    by_person: dict[str, set[str]] = {}
    for r in rows:
        by_person.setdefault(identities[r["key"]], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_person.values())  # one person's photos never straddle splits
    again = run(Snippet(PAGE, "bash", cmd.replace("runs/auto", "runs/auto2")), followed)
    assert again.returncode == 0 and f"split: {Path('cache/mine/split.csv')}" in again.stderr  # reused


def test_a_folder_without_labels_says_what_to_write(tmp_path: Path) -> None:
    from docs_support import Snippet

    (tmp_path / "holiday").mkdir()
    (tmp_path / "holiday" / "a.jpg").write_bytes(b"x")
    done = run(Snippet(PAGE, "bash", "facial-demographics data stats holiday"), tmp_path)
    assert done.returncode == 2
    assert "labels.csv" in done.stderr and "0/1, male/female or m/f" in done.stderr and "--format" in done.stderr
