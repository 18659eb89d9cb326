"""Splits: deterministic, stratified by age band x gender, grouped by identity, CSV round trip."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facial_demographics.cli import app
from facial_demographics.datasets.records import Record
from facial_demographics.datasets.splits import (
    apply_split,
    make_split,
    publish_split,
    read_split,
    split_counts,
    stratum,
    write_split,
)
from facial_demographics.datasets.utkface import read_utkface


def population(n: int, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    return [Record(path=f"/x/{i}.jpg", key=f"{i:05d}.jpg", age=float(rng.randint(0, 95)),
                   gender=rng.choice([0, 1, None])) for i in range(n)]


def people(n_people: int, seed: int = 1) -> list[Record]:
    """Identities with 1..8 photos each, at ages a few years apart."""
    rng = random.Random(seed)
    records = []
    for p in range(n_people):
        base, gender = rng.randint(5, 80), rng.choice([0, 1])
        for j in range(rng.randint(1, 8)):
            records.append(Record(path=f"/p/{p}_{j}.jpg", key=f"p{p}/{j}.jpg", age=float(base + 2 * j),
                                  gender=gender, identity=f"person {p}"))
    return records


def test_deterministic_and_order_independent() -> None:
    records = population(600)
    first = make_split(records)
    assert make_split(records) == first
    shuffled = records[:]
    random.Random(5).shuffle(shuffled)
    assert make_split(shuffled) == first
    assert make_split(records, seed=7) != first
    assert set(first) == {r.key for r in records}


def test_adding_records_moves_few() -> None:
    records = population(1000)
    before = make_split(records)
    after = make_split(records + [Record(path=f"/x/new{i}.jpg", key=f"new{i}.jpg", age=30.0, gender=0)
                                  for i in range(20)])
    moved = sum(before[k] != after[k] for k in before)
    assert moved <= 10  # only units near a cut point of the one stratum that grew


def test_stratified_shares() -> None:
    records = population(3000)
    mapping = make_split(records, val=0.15, test=0.1)
    per_stratum: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        per_stratum[stratum(r)][mapping[r.key]] += 1
    for name, counts in per_stratum.items():
        total = sum(counts.values())
        # Each stratum is cut at its own fractions, so it is off by at most one record.
        assert abs(counts["test"] - 0.1 * total) <= 1, (name, counts)
        assert abs(counts["val"] - 0.15 * total) <= 1, (name, counts)
    totals = split_counts(mapping)
    assert sum(totals.values()) == len(records)
    assert abs(totals["test"] - 300) <= len(per_stratum) and abs(totals["val"] - 450) <= len(per_stratum)


def test_grouped_by_identity() -> None:
    records = people(400)
    mapping = make_split(records, val=0.1, test=0.2)
    by_person: dict[str, set[str]] = defaultdict(set)
    for r in records:
        by_person[str(r.identity)].add(mapping[r.key])
    assert all(len(splits) == 1 for splits in by_person.values())  # no identity crosses splits
    shares = {k: v / len(records) for k, v in split_counts(mapping).items()}
    assert abs(shares["test"] - 0.2) < 0.05 and abs(shares["val"] - 0.1) < 0.05


def test_round_trip_and_apply(tmp_path: Path) -> None:
    records = population(200)
    mapping = make_split(records)
    path = write_split(mapping, tmp_path / "splits" / "s.csv")
    assert path.read_text().splitlines()[0] == "key,split"
    assert read_split(path) == mapping
    extra = Record(path="/x/extra.jpg", key="extra.jpg", age=3.0, gender=1)
    part = apply_split([*records, extra], mapping, "test")
    assert [r.key for r in part.records] == [r.key for r in records if mapping[r.key] == "test"]
    assert part.missing == ["extra.jpg"]


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate record key"):
        make_split([Record(path="a", key="k"), Record(path="b", key="k")])
    with pytest.raises(ValueError, match="sum to less than 1"):
        make_split([], val=0.5, test=0.5)
    bad = tmp_path / "bad.csv"
    bad.write_text("key,split\na.jpg,train\nb.jpg,holdout\n")
    with pytest.raises(ValueError, match="row 2 \\(b.jpg\\): split 'holdout'"):
        read_split(bad)
    bad.write_text("name,part\na.jpg,train\n")
    with pytest.raises(ValueError, match="expected columns key,split"):
        read_split(bad)
    bad.write_text("key,split\na.jpg,train\na.jpg,test\n")
    with pytest.raises(ValueError, match="key 'a.jpg' repeated"):
        read_split(bad)
    with pytest.raises(ValueError, match="unknown split"):
        apply_split([], {}, "dev")


def test_publish_split(tmp_path: Path) -> None:
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    for i in range(60):
        (folder / f"{i + 1}_{i % 2}_{i % 5}_20170116174525{i:03d}.jpg.chip.jpg").write_bytes(b"jpeg")
    counts = publish_split(folder, tmp_path / "utkface.csv", val=0.2, test=0.2)
    written = read_split(tmp_path / "utkface.csv")
    assert len(written) == 60 and split_counts(written) == counts
    assert counts["test"] > 0 and counts["val"] > 0 and counts["train"] > counts["test"]


def test_split_command(tmp_path: Path) -> None:
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    for i in range(30):
        (folder / f"{i + 10}_{i % 2}_0_20170116174525{i:03d}.jpg.chip.jpg").write_bytes(b"jpeg")
    out = tmp_path / "s.csv"
    result = CliRunner().invoke(app, ["data", "split", str(folder), "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    counts = split_counts(read_split(out))
    assert f"train {counts['train']}, val {counts['val']}, test {counts['test']}" in result.output
    assert read_split(out) == make_split(read_utkface(folder).records, seed=3)
    failed = CliRunner().invoke(app, ["data", "split", str(tmp_path / "nope"), "--out", str(out)])
    assert failed.exit_code == 2
