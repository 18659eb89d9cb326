"""Dataset statistics on a hand-made set, the written files, the rich report and the CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from facial_demographics.cli import app
from facial_demographics.commands.data import render_stats
from facial_demographics.datasets.records import Record, Rejected
from facial_demographics.datasets.stats import compute_stats, write_stats
from facial_demographics.datasets.utkface import UTKFaceResult
from facial_demographics.labels import FEMALE, MALE


def hand_made() -> UTKFaceResult:
    def rec(key: str, age: float | None, gender: int | None, **groups: str) -> Record:
        return Record(path=f"/d/{key}", key=key, age=age, gender=gender, groups=groups)

    return UTKFaceResult(
        records=[
            rec("a", 5, MALE, race="White"),
            rec("b", 22, FEMALE, race="Black"),
            rec("c", 30, MALE, race="White"),
            rec("d", 30.5, FEMALE, site="north"),
            rec("e", 60, None, race="Asian"),
            rec("f", 80, MALE, race="White"),
            rec("g", None, FEMALE, race="White"),
        ],
        rejected=[Rejected("x.jpg", "gender not 0/1: '3'"), Rejected("y.txt", "not an image file: '.txt'"),
                  Rejected("z.jpg", "gender not 0/1: 'x'; race missing")],
        source="/d",
        notes=[Rejected("d", "race missing")],
    )


def test_numbers() -> None:
    stats = compute_stats(hand_made())
    assert (stats["seen"], stats["used"], stats["rejected"]["count"]) == (10, 7, 3)
    assert stats["rejected"]["by_reason"] == {"gender not 0/1": 2, "not an image file": 1}
    assert stats["partly_malformed"]["items"] == [{"item": "d", "reason": "race missing"}]
    age = stats["age"]
    assert (age["known"], age["unknown"], age["min"], age["max"]) == (6, 1, 5, 80)
    assert age["mean"] == pytest.approx((5 + 22 + 30 + 30.5 + 60 + 80) / 6, abs=0.01)
    assert age["median"] == 30.25
    assert age["in_range"] == {"lo": 21, "hi": 75, "count": 4, "share": round(4 / 6, 4)}
    assert age["buckets5"] == {"0-24": 2, "25-49": 2, "50-74": 1, "75-99": 1, "100+": 0}
    assert age["bands"] == {"0-12": 1, "13-19": 0, "20-39": 3, "40-59": 0, "60-79": 1, "80+": 1}
    assert age["by_year"]["30"] == {"male": 1, "female": 1, "unknown": 0, "total": 2}
    assert age["by_year"]["60"] == {"male": 0, "female": 0, "unknown": 1, "total": 1}
    assert list(age["by_year"]) == ["5", "22", "30", "60", "80"]
    assert stats["gender"] == {"male": 3, "female": 3, "unknown": 1, "female_share": 0.5}
    assert stats["race"] == {"White": 4, "Black": 1, "Asian": 1, "unknown": 1}
    assert stats["groups"] == {"site": {"north": 1, "unknown": 6}}


def test_custom_range_and_empty() -> None:
    assert compute_stats(hand_made(), age_range=(0, 10))["age"]["in_range"]["count"] == 1
    empty = compute_stats(UTKFaceResult(records=[], rejected=[]))
    assert empty["age"]["in_range"]["share"] is None and empty["race"] is None and empty["seen"] == 0


def test_written_files_and_report(tmp_path: Path) -> None:
    stats = compute_stats(hand_made())
    json_path, png_path = write_stats(stats, tmp_path / "out")
    assert json.loads(json_path.read_text()) == stats
    with Image.open(png_path) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert im.format == "PNG" and pixels.shape[0] > 100 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 3
    console = Console(record=True, width=150)
    render_stats(stats, console)
    text = console.export_text()
    for expected in ("10 seen, 7 used, 3 rejected", "66.7 % of known ages between 21 and 75",
                     "gender not 0/1", "x.jpg: gender not 0/1: '3'", "race missing", "Asian"):
        assert expected in text


def test_stats_command(tmp_path: Path) -> None:
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    for name in ("25_0_2_20170116174525125.jpg.chip.jpg", "61_1_20170109142408075.jpg.chip.jpg",
                 "40_3_0_20170116174525125.jpg.chip.jpg"):
        (folder / name).write_bytes(b"jpeg")
    result = CliRunner().invoke(app, ["data", "stats", str(folder), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # undo the console's line wrapping
    assert "3 seen, 2 used, 1 rejected, 1 used with a partly malformed entry" in output
    assert json.loads((tmp_path / "s" / "stats.json").read_text())["rejected"]["by_reason"] == {
        "gender not 0/1": 1}
    missing = CliRunner().invoke(app, ["data", "stats", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "nope: no such dataset" in " ".join(missing.output.split())
