"""Issue 33: a second domain (MORPH) in the data layer, in `evaluate` and in the release rule, and age
intervals calibrated per predicted-age band with every domain weighing the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from facial_demographics.cli import app
from facial_demographics.datasets.errors import DataError
from facial_demographics.datasets.loader import detect_format, load_dataset, load_datasets
from facial_demographics.datasets.morph import parse_morph_name
from facial_demographics.datasets.splits import make_split, read_split
from facial_demographics.evaluation.evaluate import evaluate_dataset
from facial_demographics.evaluation.metrics import compute_metrics, domain_summary
from facial_demographics.evaluation.release import release_checks, target_checks, v04_targets
from facial_demographics.labels import FEMALE, INTERVAL_BAND_EDGES, MALE
from facial_demographics.manifest import AgeHead, BundleError, BundleSpec
from facial_demographics.model import ModelBundle
from facial_demographics.training.calibrate import calibrate_bundle, domain_coverage, fit_band_temperatures, inside

from tests_support import copy_bundle, simple_cache

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the MORPH reader


def test_morph_names_are_parsed_and_bad_ones_say_why() -> None:
    name = parse_morph_name("009055_0M54.JPG")
    assert (name.person, name.index, name.gender, name.age) == ("009055", 0, MALE, 54)
    assert parse_morph_name("123456_12f31.jpg").gender == FEMALE
    for bad, reason in (("009055_0X54.JPG", "not a MORPH name"), ("009055_0M5.txt", "not a MORPH name"),
                        ("009055_0M05.JPG", "outside")):
        with pytest.raises(ValueError, match=reason):
            parse_morph_name(bad)


@pytest.fixture(scope="module")
def morph_folder(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """Mugshot-named photos of the astronaut: three people (one with two photos), a bad name and the same
    photo filed twice (in a subfolder), as the public MORPH sample does."""
    root = tmp_path_factory.mktemp("morph") / "morph-mini"
    (root / "trainset").mkdir(parents=True)
    photo = Image.fromarray(astronaut).resize((200, 240))
    for name in ("000101_0M34.JPG", "000101_1M36.JPG", "000202_0F45.JPG", "000303_0M58.JPG", "000404_0Q40.JPG"):
        photo.save(root / name, quality=90)
    photo.save(root / "trainset" / "000202_0F45.JPG", quality=90)
    return root


def test_a_morph_folder_is_read_by_person_with_nothing_dropped_silently(morph_folder: Path) -> None:
    assert detect_format(morph_folder) == "morph"
    read = load_dataset(morph_folder)
    assert sorted(r.key for r in read.records) == ["000101_0M34.JPG", "000101_1M36.JPG", "000202_0F45.JPG",
                                                   "000303_0M58.JPG"]
    assert {r.identity for r in read.records} == {"000101", "000202", "000303"}
    assert all(r.source == "morph" for r in read.records)
    assert [(r.item, "not a MORPH name" in r.reason) for r in read.rejected] == [("000404_0Q40.JPG", True)]
    assert [n.item for n in read.notes] == ["trainset/000202_0F45.JPG"]  # the copy, read once
    split = make_split(read.records, val=0.5, test=0.0, seed=1)
    assert split["000101_0M34.JPG"] == split["000101_1M36.JPG"]  # one person, one split


def test_several_split_files_merge_and_a_key_in_two_is_refused(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_text("key,split\nx.jpg,train\ny.jpg,val\n")
    b.write_text("key,split\nm.JPG,val\n")
    c.write_text("key,split\nx.jpg,test\n")
    assert read_split(f"{a},{b}") == {"x.jpg": "train", "y.jpg": "val", "m.JPG": "val"}
    with pytest.raises(DataError, match="also in"):
        read_split(f"{a},{c}")


def test_datasets_read_together_need_distinct_keys(morph_folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "again"
    copy.mkdir()
    (copy / "000303_0M58.JPG").write_bytes((morph_folder / "000303_0M58.JPG").read_bytes())
    with pytest.raises(DataError, match="000303_0M58.JPG"):
        load_datasets([morph_folder, copy])


def test_data_prepare_makes_one_cache_of_two_datasets(morph_folder: Path, astronaut: np.ndarray,
                                                      tmp_path: Path) -> None:
    utk = tmp_path / "utk"
    utk.mkdir()
    Image.fromarray(astronaut).resize((200, 200)).save(utk / "30_1_0_20170101000000001.jpg.chip.jpg")
    out = tmp_path / "cache"
    result = CliRunner().invoke(app, ["data", "prepare", str(utk), str(morph_folder), "--size", "64",
                                      "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    index = pd.read_parquet(out / "index.parquet")
    assert index["source"].tolist() == ["utkface"] + ["morph"] * 4
    assert (index["status"] == "ok").all()  # the detector found every face, mugshot framing included
    assert "000404_0Q40.JPG" in result.output  # the rejected name is reported


# --------------------------------------------------------------------------- evaluate --domain


def test_evaluate_measures_another_domain_beside_the_main_set(morph_folder: Path, astronaut: np.ndarray,
                                                              tiny_bundle: Path, tmp_path: Path) -> None:
    utk = tmp_path / "utk"
    utk.mkdir()
    Image.fromarray(astronaut).save(utk / "30_1_0_20170101000000001.jpg.chip.jpg")
    Image.fromarray(astronaut).save(utk / "60_0_0_20170101000000002.jpg.chip.jpg")
    split = tmp_path / "split.csv"
    split.write_text("key,split\n" + "".join(f"{p.name},test\n" for p in sorted(utk.iterdir())))
    out = tmp_path / "eval"
    run = evaluate_dataset(utk, model=tiny_bundle, split_file=split, cropped=True, out=out, n_resamples=20,
                           domains=[morph_folder], domain_split="val")
    assert [d.name for d in run.domains] == ["morph-mini"]
    # The checkout's splits/morph.csv names none of these files, so all four records are measured (and said).
    assert "evaluating ALL records" in run.domains[0].selection
    main = json.loads((out / "metrics.json").read_text())
    own = json.loads((out / "domains" / "morph-mini" / "metrics.json").read_text())
    entry = main["domains"]["morph-mini"]
    assert entry["n"] == own["n_age"] == 4 and entry["mae"] == pytest.approx(own["mae"])
    assert entry["gender_recall"]["female"] == own["gender_recall"]["female"]
    assert set(entry["by_age_band"]) == {"20-39", "40-59"}
    assert entry["report"] == "domains/morph-mini/report.html" and (out / entry["report"]).is_file()
    assert own["run"]["cropped"] is False  # mugshots are whole photos: the detector runs
    assert "Other datasets (out of domain)" in (out / "report.html").read_text()


# --------------------------------------------------------------------------- release rule with domains


def _frame(n: int, error: float, seed: int, lo: int = 1, hi: int = 90) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    true = rng.integers(lo, hi, n).astype(float)
    pred = true + rng.exponential(error, n) * rng.choice([-1.0, 1.0], n)
    gender = rng.choice(["male", "female"], n)
    return pd.DataFrame({"true_age": true, "true_gender": gender, "race": "", "pred_age": pred,
                         "age_low": pred - 5, "age_high": pred + 5, "pred_gender": gender,
                         "p_female": np.where(gender == "female", 0.9, 0.1), "status": "ok"})


def _with_domain(utk_error: float, morph_error: float) -> dict:
    m = compute_metrics(_frame(400, utk_error, 0), n_resamples=0)
    m["domains"] = {"morph": domain_summary(compute_metrics(_frame(200, morph_error, 1, 30, 60), n_resamples=0))}
    return m


def test_with_domains_the_rule_asks_no_loss_in_domain_and_a_gain_out_of_domain() -> None:
    reference = _with_domain(4.0, 7.0)
    same_home_better_away = _with_domain(4.0, 6.0)
    checks = {c.name: c for c in release_checks(same_home_better_away, reference)}
    assert checks["age MAE"].passed and checks["age MAE"].rule.startswith("≤")  # equal is enough at home
    assert checks["morph MAE"].passed and checks["morph MAE"].rule.startswith("<")
    assert all(c.passed for c in checks.values())
    no_gain_away = {c.name: c for c in release_checks(_with_domain(3.5, 7.0), reference)}
    assert not no_gain_away["morph MAE"].passed  # equal is not a gain out of domain
    lost_home = {c.name: c for c in release_checks(_with_domain(4.5, 6.0), reference)}
    assert not lost_home["age MAE"].passed


def test_v04_targets_read_the_domain_entry_and_bound_bias_both_ways() -> None:
    m = _with_domain(4.0, 5.0)
    m["domains"]["morph"]["bias"] = -1.5
    checks = {c.name: c for c in target_checks(m, v04_targets("morph"))}
    assert checks["morph |bias|"].value == pytest.approx(1.5) and not checks["morph |bias|"].passed
    assert checks["morph age MAE"].passed
    # The development MORPH people are 30-59: the 60+ bias cannot be measured there, and says so.
    assert checks["morph |bias|, ages 60-79"].value is None and not checks["morph |bias|, ages 60-79"].passed


def test_release_gate_script_checks_v04_targets(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(_with_domain(4.0, 5.0)))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "release_gate.py"), "--targets",
                           f"v04={path}", "--v04-domain", "morph"], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src")}, check=False)
    assert done.returncode == 0, done.stderr
    assert "morph 80 % interval coverage" in done.stdout and "| morph age MAE |" in done.stdout


# --------------------------------------------------------------------------- interval per band, per domain


def _logits(centres: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Log of Gaussian age distributions over 0..100 around ``centres`` with widths ``sigma``."""
    years = np.arange(101)
    return -0.5 * ((years[None, :] - centres[:, None]) / sigma[:, None]) ** 2


def test_band_temperatures_fix_a_miscalibration_that_grows_with_age() -> None:
    # The model says +-4 years everywhere; the truth spreads 3 years around children and 9 around the old.
    rng = np.random.default_rng(0)
    centres = rng.uniform(2, 85, 6000)
    spread = np.where(centres < 13, 3.0, np.where(centres < 40, 5.0, 9.0))
    ages = np.clip(centres + rng.normal(0, spread), 0, 100)
    logits = _logits(centres, np.full(len(centres), 4.0))
    head = AgeHead("age", "distribution", tuple(float(v) for v in range(101)))
    one = fit_band_temperatures(head, logits, ages, edges=())
    banded = fit_band_temperatures(head, logits, ages)
    assert len(banded.temperatures) == len(INTERVAL_BAND_EDGES) + 1
    old, young = centres >= 60, centres < 13
    hit_one, hit_banded = inside(one, logits, ages, 0.8), inside(banded, logits, ages, 0.8)
    assert abs(hit_banded.mean() - 0.8) < 0.02
    assert abs(hit_banded[old].mean() - 0.8) < 0.04 and abs(hit_banded[young].mean() - 0.8) < 0.04
    assert hit_one[old].mean() < 0.75 and hit_one[young].mean() > 0.85  # what one temperature leaves
    assert banded.temperatures[0] < 1.0 < banded.temperatures[-1]


def test_each_domain_weighs_the_same_in_the_fit() -> None:
    # 3,000 faces of a domain the model knows (truth +-4) and 300 of one it does not (truth +-8).
    rng = np.random.default_rng(1)
    centres = rng.uniform(30, 60, 3300)
    domains = np.array(["home"] * 3000 + ["away"] * 300)
    ages = centres + rng.normal(0, np.where(domains == "home", 4.0, 8.0))
    logits = _logits(centres, np.full(len(centres), 4.0))
    head = AgeHead("age", "distribution", tuple(float(v) for v in range(101)))
    pooled = fit_band_temperatures(head, logits, ages, None, edges=())
    fair = fit_band_temperatures(head, logits, ages, domains, edges=())
    away = domains == "away"
    assert inside(fair, logits, ages, 0.8)[away].mean() > inside(pooled, logits, ages, 0.8)[away].mean() + 0.05
    assert abs(domain_coverage(fair, logits, ages, domains, 0.8) - 0.8) < 0.02


def test_band_temperatures_round_trip_and_bad_ones_are_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    cache = simple_cache(tmp_path / "cache", 64, 200)
    cal = calibrate_bundle(bundle, cache, cache / "split.csv", target=0.5)
    manifest = ModelBundle.load(bundle).manifest
    head = manifest["heads"]["age"]
    assert head["temperature_edges"] == list(INTERVAL_BAND_EDGES)
    assert head["temperatures"] == list(cal.band_temperatures)
    assert manifest["training"]["interval_calibration"]["coverage_by_domain"] == cal.by_domain
    broken = json.loads(json.dumps(manifest))
    broken["heads"]["age"]["temperatures"] = [1.0, 2.0]
    with pytest.raises(BundleError, match="one positive value per band"):
        BundleSpec.parse(broken)


def test_the_cli_prints_each_domain_and_its_folder(morph_folder: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-eval"
    result = CliRunner().invoke(app, ["evaluate", "--dataset", str(morph_folder), "--model", str(tiny_bundle),
                                      "--domain", str(morph_folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Out of domain: morph-mini" in result.output and str(out / "domains" / "morph-mini") in result.output
    missing = CliRunner().invoke(app, ["evaluate", "--dataset", str(morph_folder), "--model", str(tiny_bundle),
                                       "--domain", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "nowhere" in missing.output
    assert not (tmp_path / "x").exists()  # refused before any image was read


def test_morph_dev_copies_only_the_listed_files(tmp_path: Path) -> None:
    # A stand-in for the fetched snapshot: a git repository with MORPH's folders, one file in two of them.
    repo = tmp_path / "snapshot"
    for rel in ("morph_small/Images_ori/000101_0M34.JPG", "morph_small/trainset/000101_0M34.JPG",
                "morph_small/Images_ori/000202_0F45.JPG", "test_images/000303_0M58.JPG"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(rel.encode())
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("000101_0M34.JPG\n000303_0M58.JPG\n")
    out = tmp_path / "out"
    script = ROOT / "scripts" / "morph_dev.py"
    done = subprocess.run([sys.executable, str(script), str(repo), str(out), "--files", str(allowed)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["000101_0M34.JPG", "000303_0M58.JPG"]  # 000202 not listed
    assert (out / "000101_0M34.JPG").read_bytes() == b"morph_small/Images_ori/000101_0M34.JPG"
    allowed.write_text("000101_0M34.JPG\n999999_0M40.JPG\n")
    again = subprocess.run([sys.executable, str(script), str(repo), str(out), "--files", str(allowed)],
                           capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "1 already there, 1 not in the snapshot" in again.stdout


def test_a_flat_distribution_never_passes_for_calibrated() -> None:
    # Children whose model is already too sure: no temperature brings the coverage down to 80 % in the
    # sane range, and the far-too-wide ones whose central interval misses the youngest ages must not win.
    rng = np.random.default_rng(2)
    centres = rng.uniform(1, 12, 2000)
    ages = np.clip(np.round(centres + rng.normal(0, 0.3, 2000)), 0, 100)
    logits = _logits(centres, np.full(len(centres), 1.5))
    head = AgeHead("age", "distribution", tuple(float(v) for v in range(101)))
    fitted = fit_band_temperatures(head, logits, ages, edges=())
    assert fitted.temperatures[0] < 1.0
    _, low, high = fitted.decode(logits, 0.8)
    assert np.median(high - low) < 5  # not the 10-90 interval of a flattened distribution
