"""Population summaries (issue 30): bands, the estimator, reading analyze's output, the files and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facial_demographics.cli import app
from facial_demographics.errors import InvalidValueError
from facial_demographics.labels import AGE_GROUPS
from facial_demographics.model import ModelBundle
from facial_demographics.population import AgeBands, Evidence, PopulationCalibration, estimate
from facial_demographics.population.records import RecordsError, calibration_of, read_results
from facial_demographics.population.report import write_summary
from facial_demographics.types import decode_distribution, encode_distribution

runner = CliRunner()
AGES = np.arange(101)


# -- bands ------------------------------------------------------------------------------------------------
def test_default_bands_are_the_audience_brackets() -> None:
    assert AgeBands().names == ("0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
    assert AgeBands.parse("13,18,25,35,45,55,65") == AgeBands()
    assert AgeBands.parse(None) == AgeBands()


def test_report_preset_is_the_25_year_buckets() -> None:
    assert AgeBands.parse("report").names == AGE_GROUPS


@pytest.mark.parametrize("text", ["18,13", "0,10", "10,101", "ten,20", "13,,18", "nope"])
def test_bad_bands_name_the_problem(text: str) -> None:
    with pytest.raises(InvalidValueError, match="bands"):
        AgeBands.parse(text)


def test_band_matrix_sends_each_year_to_its_band() -> None:
    bands = AgeBands.parse("18,65")
    m = bands.matrix()
    assert m.shape == (101, 3) and (m.sum(axis=1) == 1).all()
    assert m[17, 0] == 1 and m[18, 1] == 1 and m[64, 1] == 1 and m[65, 2] == 1 and m[100, 2] == 1


# -- the compact distribution ----------------------------------------------------------------------------
def test_distribution_round_trip_keeps_the_mass() -> None:
    p = np.exp(-((AGES - 30.0) ** 2) / 50)
    p /= p.sum()
    doc = encode_distribution(p)
    assert doc["start"] > 0 and len(doc["p"]) < 60  # the tails are dropped
    back = decode_distribution(json.loads(json.dumps(doc)), 101)
    assert abs(back.sum() - 1) < 1e-9 and np.abs(back - p).max() < 1e-3


@pytest.mark.parametrize("doc", [None, {"start": 0}, {"start": -1, "p": [1]}, {"start": 100, "p": [0.5, 0.5]},
                                 {"start": 0, "p": [0, 0]}, {"start": 0, "p": [-1, 2]}])
def test_bad_distributions_are_refused(doc: object) -> None:
    with pytest.raises(ValueError):
        decode_distribution(doc, 101)


# -- the estimator on a model whose behaviour we know ------------------------------------------------------
def _world(seed: int, n: int, band_mix: np.ndarray | None, noise: float = 6.0) -> tuple[Evidence, np.ndarray]:
    """Faces of a known population seen through a known blur: each face's observed age is its true age
    plus N(0, noise); its age distribution is the Bayes posterior under the training prior ``TRAIN``."""
    rng = np.random.default_rng(seed)
    if band_mix is None:
        ages = rng.choice(AGES, size=n, p=TRAIN)
    else:
        bands = AgeBands().index(AGES)
        weights = band_mix[bands] * TRAIN / np.bincount(bands, weights=TRAIN)[bands]
        ages = rng.choice(AGES, size=n, p=weights / weights.sum())
    seen = ages + rng.normal(0, noise, n)
    like = np.exp(-((seen[:, None] - AGES[None]) ** 2) / (2 * noise**2))
    post = like * TRAIN
    post /= post.sum(axis=1, keepdims=True)
    genders = rng.integers(0, 2, n)
    p_female = np.clip(np.where(genders == 1, 0.9, 0.1) + rng.normal(0, 0.05, n), 0.01, 0.99)
    return Evidence(post, p_female), np.stack([ages, genders], axis=1)


# A training prior with UTKFace's shape: many infants, a peak at 26, few elderly.
TRAIN = np.exp(-((AGES - 26.0) ** 2) / 200) + 0.6 * np.exp(-AGES / 3) + 0.15
TRAIN /= TRAIN.sum()


def _calibration() -> PopulationCalibration:
    ev, truth = _world(1, 4000, None)
    return PopulationCalibration.fit(ev.age_probs, ev.p_female, truth[:, 0], truth[:, 1], source="synthetic")


def _true_bands(truth: np.ndarray) -> np.ndarray:
    return np.bincount(AgeBands().index(truth[:, 0]), minlength=8) / len(truth)


@pytest.mark.parametrize("mix", [[0, 0, 0.02, 0.03, 0.05, 0.1, 0.25, 0.55], [0, 0.08, 0.45, 0.35, 0.08, 0.04, 0, 0]],
                         ids=["retirement-home", "twenties-crowd"])
def test_em_corrects_the_pull_toward_the_training_mix(mix: list[float]) -> None:
    """Shifted populations seen by a model trained on another mix: summing posteriors pulls every face
    toward the training peak; the EM adjustment with the validation calibration undoes about half of that
    (the rest is the information a 6-year blur destroys: see benchmarks/population.py)."""
    ev, truth = _world(2, 3000, np.array(mix))
    cal = _calibration()
    true = _true_bands(truth)
    err_sum = np.abs(np.array([s.share for s in estimate(ev, method="sum", replicates=0).age]) - true).max()
    em = estimate(ev, method="em", calibration=cal, replicates=0)
    err_em = np.abs(np.array([s.share for s in em.age]) - true).max()
    assert err_em < 0.65 * err_sum, (err_em, err_sum)


def test_intervals_hold_the_truth_and_counts_follow_shares() -> None:
    ev, truth = _world(3, 1500, None)
    s = estimate(ev, calibration=_calibration(), interval=0.9, seed=1)
    true = _true_bands(truth)
    inside = [r.low <= t <= r.high for r, t in zip(s.age, true, strict=True)]
    assert sum(inside) >= 6, [(r.low, r.high, t) for r, t in zip(s.age, true, strict=True)]
    female = s.gender[1]
    assert female.low <= truth[:, 1].mean() <= female.high
    assert abs(sum(r.share for r in s.age) - 1) < 1e-6
    for r in s.age:
        assert r.low <= r.share <= r.high and r.count == pytest.approx(r.share * 1500)
    cells = [c.share for row in s.age_gender for c in row]
    assert abs(sum(cells) - 1) < 1e-6


def test_same_input_same_summary() -> None:
    ev, _ = _world(4, 300, None)
    cal = _calibration()
    assert estimate(ev, calibration=cal, seed=5).to_dict() == estimate(ev, calibration=cal, seed=5).to_dict()


def test_summary_json_contract() -> None:
    ev, _ = _world(5, 200, None)
    doc = json.loads(json.dumps(estimate(ev, calibration=_calibration(), context={"images": 7}).to_dict()))
    assert doc["faces"] == 200 and doc["people"] is None and doc["interval"] == 0.9 and doc["method"] == "em"
    assert doc["bands"] == list(AgeBands().names) and doc["images"] == 7
    assert [r["band"] for r in doc["age"]] == doc["bands"]
    assert [r["gender"] for r in doc["gender"]] == ["female", "male"]
    assert len(doc["age_gender"]) == 16 and {r["gender"] for r in doc["age_gender"]} == {"female", "male"}
    for row in doc["age"] + doc["gender"] + doc["age_gender"]:
        assert set(row) >= {"share", "low", "high", "count"} and 0 <= row["low"] <= row["share"] <= row["high"] <= 1


def test_people_counts_and_no_calibration_fallback() -> None:
    ev, _ = _world(6, 40, None)
    s = estimate(ev, people=40)
    assert s.people == 40 and s.method.startswith("sum (no population calibration")
    assert sum(r.count for r in s.age) == pytest.approx(40)


def test_no_faces_gives_an_empty_but_valid_summary() -> None:
    s = estimate(Evidence(np.zeros((0, 101)), np.zeros(0)), calibration=_calibration())
    doc = s.to_dict()
    assert doc["faces"] == 0 and all(r["count"] == 0 and r["low"] == 0 and r["high"] == 1 for r in doc["age"])


def test_without_a_gender_head_only_age_is_reported() -> None:
    ev, _ = _world(7, 100, None)
    s = estimate(Evidence(ev.age_probs, np.full(100, np.nan)), calibration=_calibration())
    assert s.gender == [] and s.age_gender == [] and len(s.age) == 8


def test_calibration_round_trips_through_the_manifest_form() -> None:
    cal = _calibration().with_systematic(0.05, 0.01)
    back = PopulationCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.faces == cal.faces == 4000 and back.systematic == (0.05, 0.01, 0.05)
    assert np.abs(back.confusion - cal.confusion).max() < 1e-5
    with pytest.raises(ValueError, match="population.counts"):
        PopulationCalibration.from_dict({**cal.to_dict(), "counts": [[1, 2]]})


def test_shipped_models_carry_a_population_calibration() -> None:
    for name in ("default", "fast", "fp32"):
        cal = calibration_of(ModelBundle.load(name))
        assert cal is not None and cal.faces > 1000 and cal.systematic[0] > 0, name


# -- reading analyze output ------------------------------------------------------------------------------
def _face(age: float, female: bool) -> dict[str, object]:
    p = np.exp(-((AGES - age) ** 2) / 30)
    return {"box": [0, 0, 10, 10], "score": 0.99, "landmarks": [], "age": age, "age_interval": [age - 5, age + 5],
            "age_group": "x", "gender": "female" if female else "male", "gender_probability": 0.9,
            "age_distribution": encode_distribution(p / p.sum())}


def _write_jsonl(path: Path, records: list[object], extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_results_counts_errors_empty_images_and_broken_lines(tmp_path: Path) -> None:
    records = [{"path": "a.jpg", "faces": [_face(30, True), _face(70, False)], "error": None},
               {"path": "b.jpg", "faces": [], "error": None},
               {"path": "c.jpg", "faces": [], "error": "not an image"}]
    f = _write_jsonl(tmp_path / "r.jsonl", records, ('{"path": "d.jpg", "fa', "garbage"))
    found = read_results([f])
    assert (found.images, found.errors, found.no_face, found.broken_lines) == (3, 1, 1, 2)
    ev = found.evidence()
    assert len(ev) == 2 and ev.p_female[0] == pytest.approx(0.9) and ev.p_female[1] == pytest.approx(0.1)


def test_read_results_reads_a_json_array_too(tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    f.write_text(json.dumps([{"path": "a.jpg", "faces": [_face(20, True)], "error": None}], indent=2))
    assert len(read_results([f]).evidence()) == 1


@pytest.mark.parametrize(("content", "reason"), [
    ("", "empty file"),
    ('{"a": 1}\n{"b": 2}\n', "not analyze output"),
    ('[{"a": 1}]', "not analyze output"),
    ('{"path": "a.jpg", "faces": [{"age": 30, "gender": "male", "gender_probability": 0.9}], "error": null}\n',
     "no age_distribution"),
])
def test_unusable_files_name_the_file_and_the_reason(tmp_path: Path, content: str, reason: str) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(RecordsError, match=reason) as info:
        read_results([f])
    assert str(f) in str(info.value)


def test_write_summary_writes_four_files(tmp_path: Path) -> None:
    ev, _ = _world(8, 300, None)
    paths = write_summary(estimate(ev, calibration=_calibration()), tmp_path / "s", "Test population")
    assert [p.name for p in paths] == ["summary.json", "summary.csv", "pyramid.png", "report.html"]
    rows = list(csv.DictReader(open(paths[1])))
    assert len(rows) == 8 + 2 + 16 and {r["group"] for r in rows} == {"age", "gender", "age_gender"}
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths[3].read_text()
    assert "data:image/png;base64," in page and "65+" in page and "<script" not in page
    assert not list((tmp_path / "s").glob("*.part"))


# -- the CLI ---------------------------------------------------------------------------------------------
def test_summarize_cli_writes_the_summary_and_prints_a_table(tmp_path: Path) -> None:
    records = [{"path": f"{i}.jpg", "faces": [_face(8 + 7 * i, i % 2 == 0)], "error": None} for i in range(10)]
    f = _write_jsonl(tmp_path / "r.jsonl", records, ("broken",))
    out = tmp_path / "sum"
    res = runner.invoke(app, ["summarize", str(f), "--out", str(out), "--bands", "18,65"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "summary.json").read_text())
    assert doc["bands"] == ["0-17", "18-64", "65+"] and doc["faces"] == 10 and doc["broken_lines"] == 1
    assert "18-64" in res.output and "1 broken lines skipped" in res.output


@pytest.mark.parametrize("setup", ["missing", "folder", "not_results", "bad_bands"])
def test_summarize_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, setup: str) -> None:
    good = _write_jsonl(tmp_path / "ok.jsonl", [{"path": "a", "faces": [_face(30, True)], "error": None}])
    args = {"missing": [str(tmp_path / "nope.jsonl")], "folder": [str(tmp_path)],
            "not_results": [str(_write_jsonl(tmp_path / "x.jsonl", [{"hello": 1}]))],
            "bad_bands": [str(good), "--bands", "40,20"]}[setup]
    res = runner.invoke(app, ["summarize", *args, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "Traceback" not in res.output


def test_analyze_summary_on_real_faces(tmp_path: Path, utkface_dir: Path) -> None:
    """The real pipeline on real UTKFace faces: analyze --summary writes a summary whose face count and
    image counts match the jsonl, and summarize on that jsonl gives the same shares."""
    files = sorted(utkface_dir.glob("*.jpg"))[::997][:12]
    for f in files:
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    out, results = tmp_path / "sum", tmp_path / "r.jsonl"
    res = runner.invoke(app, ["analyze", str(tmp_path / "in"), "--cropped", "-f", "jsonl", "-o", str(results),
                              "--summary", str(out)])
    assert res.exit_code == 1, res.output  # one unreadable image
    doc = json.loads((out / "summary.json").read_text())
    assert doc["faces"] == len(files) and doc["images"] == len(files) + 1 and doc["errors"] == 1
    assert doc["method"] == "em"
    again = tmp_path / "again"
    assert runner.invoke(app, ["summarize", str(results), "--out", str(again)]).exit_code == 0
    assert json.loads((again / "summary.json").read_text())["age"] == doc["age"]


def test_python_api_summarizes_analysed_images() -> None:
    """FaceAnalyzer.summarize on real results: the bundled astronaut photo and an unreadable input."""
    from facial_demographics import FaceAnalyzer
    from facial_demographics.commands.analyze import SAMPLE_PHOTO

    with FaceAnalyzer() as analyzer:
        results = analyzer.analyze_batch([str(SAMPLE_PHOTO), b"not an image"])
        summary = analyzer.summarize(results, bands="report")
    doc = summary.to_dict()
    assert doc["faces"] == 1 and doc["images"] == 2 and doc["errors"] == 1 and doc["method"] == "em"
    assert doc["bands"] == list(AGE_GROUPS)
    assert sum(r["count"] for r in doc["age"]) == pytest.approx(1.0)


# -- each person once across photos (--unique) -------------------------------------------------------------
def test_group_faces_joins_near_descriptors_but_never_two_faces_of_one_photo() -> None:
    from facial_demographics.population.identity import group_faces

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.1, 128), rng.normal(0, 0.1, 128)
    near = lambda v: v + rng.normal(0, 0.01, 128)  # noqa: E731
    vectors = np.stack([a, near(a), b, near(b), near(a), near(a)])
    g = group_faces(vectors, images=[0, 1, 1, 2, 3, 3], threshold=0.5)
    assert list(g.person[:5]) == [0, 0, 1, 1, 0]
    assert g.person[5] == 2  # the same look as person 0, but person 0 is already in photo 3
    assert g.people == 3 and np.isnan(g.distance[0]) and g.distance[1] < 0.5


def test_people_evidence_is_one_vote_per_person() -> None:
    from facial_demographics.population.identity import Grouping, people_evidence

    probs = np.zeros((3, 101))
    probs[0, 10] = probs[1, 20] = probs[2, 70] = 1
    ev = people_evidence(Evidence(probs, np.array([0.9, 0.7, 0.2])), Grouping(np.array([0, 0, 1]), np.zeros(3)))
    assert len(ev) == 2 and ev.age_probs[0, 10] == ev.age_probs[0, 20] == 0.5
    assert ev.p_female == pytest.approx([0.8, 0.2])


def test_summarize_unique_needs_descriptors(tmp_path: Path) -> None:
    f = _write_jsonl(tmp_path / "r.jsonl", [{"path": "a", "faces": [_face(30, True)], "error": None}])
    res = runner.invoke(app, ["summarize", str(f), "--out", str(tmp_path / "o"), "--unique"])
    assert res.exit_code == 2 and "analyze --unique" in res.output


def test_analyze_unique_counts_a_repeated_guest_once(tmp_path: Path, utkface_dir: Path) -> None:
    """Real faces: three people, one of them in three photos (resized, darkened, mirrored); --unique counts
    three people, without it five faces."""
    from PIL import Image, ImageEnhance, ImageOps

    files = sorted(utkface_dir.glob("3[0-9]_*.jpg"))[:400:150]
    folder = tmp_path / "event"
    folder.mkdir()
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    guest = Image.open(files[0]).convert("RGB")
    ImageOps.mirror(guest).resize((150, 150)).save(folder / "guest_again.jpg", quality=70)
    ImageEnhance.Brightness(guest).enhance(0.7).save(folder / "guest_dark.jpg", quality=80)
    out = tmp_path / "sum"
    res = runner.invoke(app, ["analyze", str(folder), "--cropped", "-f", "jsonl", "-o", str(tmp_path / "r.jsonl"),
                              "--summary", str(out), "--unique"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "summary.json").read_text())
    assert doc["faces"] == 5 and doc["people"] == 3 and doc["unique"]["people"] == 3
    # each band's count is rounded to 0.1, so their sum is 3 within half a tenth per band
    assert sum(r["count"] for r in doc["age"]) == pytest.approx(3, abs=0.05 * len(doc["age"]))
    record = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert len(record["faces"][0]["descriptor"]) == 128
    again = runner.invoke(app, ["summarize", str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "s2")])
    assert again.exit_code == 0 and json.loads((tmp_path / "s2" / "summary.json").read_text())["people"] is None
