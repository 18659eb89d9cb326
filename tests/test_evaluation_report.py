"""The report, the per-image prediction rows and record selection, without running a model."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facial_demographics.datasets.records import Record
from facial_demographics.evaluation import evaluate as E
from facial_demographics.evaluation import report as R
from facial_demographics.evaluation.metrics import compute_metrics
from facial_demographics.types import Face, ImageResult


def face(score: float, age: float = 30, gender: str | None = "male", prob: float | None = 0.8,
         fallback: bool = False) -> Face:
    return Face(box=(10, 20, 60, 90), score=score, landmarks=[(0.0, 0.0)] * 5, age=age,
                age_interval=(age - 5, age + 5), age_group="25-49", gender=gender,  # type: ignore[arg-type]
                gender_probability=prob, fallback=fallback)  # type: ignore[arg-type]


RECORD = Record(path="/x/31_1_2_2017.jpg", key="31_1_2_2017.jpg", age=31.0, gender=1,
                groups={"race": "Asian"})


def test_prediction_row_statuses() -> None:
    row = E.prediction_row(RECORD, ImageResult(path="p", error="truncated"))
    assert row["status"] == "unreadable" and row["error"] == "truncated" and np.isnan(row["pred_age"])
    assert (row["true_gender"], row["race"], row["true_age"]) == ("female", "Asian", 31.0)
    assert E.prediction_row(RECORD, ImageResult(path="p", width=9, height=9))["status"] == "no_face"
    fb = E.prediction_row(RECORD, ImageResult(path="p", faces=[face(0.0, fallback=True)]))
    assert fb["status"] == "fallback" and fb["pred_age"] == 30


def test_prediction_row_takes_highest_score_and_converts_to_p_female() -> None:
    result = ImageResult(path="p", faces=[face(0.7, age=20, gender="female", prob=0.9),
                                          face(0.95, age=40, gender="male", prob=0.8)])
    row = E.prediction_row(RECORD, result)
    assert row["status"] == "ok" and row["n_faces"] == 2 and row["pred_age"] == 40
    assert row["pred_gender"] == "male" and row["p_female"] == pytest.approx(0.2)
    assert (row["age_low"], row["age_high"]) == (35, 45)
    assert (row["box_x1"], row["box_y2"]) == (10, 90)
    no_gender = E.prediction_row(RECORD, ImageResult(path="p", faces=[face(0.9, gender=None, prob=None)]))
    assert no_gender["pred_gender"] == "" and np.isnan(no_gender["p_female"])


def make_utk_folder(root: Path, n: int = 12) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"{10 + 5 * i}_{i % 2}_{i % 5}_20170116174525{i:03d}.jpg.chip.jpg"
        Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(root / name)
        names.append(name)
    return sorted(names)


def test_select_records_split_limit_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = make_utk_folder(tmp_path / "utk")
    split = tmp_path / "split.csv"
    split.write_text("key,split\n" + "".join(f"{k},{'test' if i % 2 else 'train'}\n"
                                             for i, k in enumerate(names[:-2])))
    chosen = E.select_records(tmp_path / "utk", split_file=split)
    assert [r.key for r in chosen.records] == [k for i, k in enumerate(names[:-2]) if i % 2]
    assert "2 dataset keys not in the split file" in chosen.note and chosen.format == "utkface"

    a = E.select_records(tmp_path / "utk", split_file=split, limit=3, seed=1)
    b = E.select_records(tmp_path / "utk", split_file=split, limit=3, seed=1)
    assert [r.key for r in a.records] == [r.key for r in b.records] and len(a.records) == 3
    keys = [r.key for r in chosen.records]
    assert [keys.index(r.key) for r in a.records] == sorted(keys.index(r.key) for r in a.records)

    with pytest.raises(FileNotFoundError, match="split file not found"):
        E.select_records(tmp_path / "utk", split_file=tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="no records of split 'val'"):
        E.select_records(tmp_path / "utk", split_file=split, split="val")

    monkeypatch.setattr(E, "default_split_file", lambda fmt: None)
    everything = E.select_records(tmp_path / "utk")
    assert len(everything.records) == len(names) and "evaluating ALL records" in everything.note

    # A default split made for another copy of the dataset is not applied (an explicit one is).
    other = tmp_path / "other.csv"
    other.write_text("key,split\nsomething_else.jpg,test\n")
    monkeypatch.setattr(E, "default_split_file", lambda fmt: other)
    fallback = E.select_records(tmp_path / "utk")
    assert len(fallback.records) == len(names) and "names none of these images" in fallback.note
    with pytest.raises(ValueError, match="no records of split 'test'"):
        E.select_records(tmp_path / "utk", split_file=other)


def synthetic_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    true = rng.integers(1, 90, n).astype(float)
    pred = true + rng.normal(0, 6, n)
    p_f = rng.uniform(0, 1, n)
    rows = {
        "key": [f"img{i}.jpg" for i in range(n)], "path": [f"/data/img{i}.jpg" for i in range(n)],
        "true_age": true, "true_gender": rng.choice(["male", "female"], n),
        "race": rng.choice(["White", "Black", "Asian"], n), "pred_age": pred, "age_low": pred - 6,
        "age_high": pred + 6, "pred_gender": np.where(p_f >= 0.5, "female", "male"), "p_female": p_f,
        "status": ["ok"] * (n - 3) + ["no_face", "fallback", "unreadable"], "box_x1": 10.0, "box_y1": 10.0,
        "box_x2": 50.0, "box_y2": 50.0,
    }
    df = pd.DataFrame(rows)
    missing = df["status"].isin(["no_face", "unreadable"])
    df.loc[missing, ["pred_age", "age_low", "age_high", "p_female"]] = np.nan
    df.loc[missing, "pred_gender"] = ""
    return df


def fake_load(path: str) -> np.ndarray:
    if path.endswith("img3.jpg"):
        raise OSError("gone")
    return np.full((100, 200, 3), 128, np.uint8)


def test_thumbnail_crops_box_with_margin() -> None:
    b64 = R.thumbnail("x", (10, 10, 50, 50), fake_load)
    assert b64 is not None
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert im.format == "JPEG" and im.size == (60, 60)  # 40 px box + 25 % each side, clipped at 0
    whole = Image.open(io.BytesIO(base64.b64decode(R.thumbnail("x", None, fake_load) or "")))
    assert whole.size == (128, 64)
    assert R.thumbnail("img3.jpg", None, fake_load) is None


def test_worst_cases_order() -> None:
    df = synthetic_frame()
    age, gender = R.worst_cases(df, 5)
    errors = (age["pred_age"] - age["true_age"]).abs().to_numpy()
    all_errors = (df["pred_age"] - df["true_age"]).abs().dropna().sort_values(ascending=False).to_numpy()
    assert np.allclose(errors, all_errors[:5])
    assert (gender["true_gender"] != gender["pred_gender"]).all() and len(gender) == 5
    conf = (gender["p_female"] - 0.5).abs().to_numpy()
    assert (np.diff(conf) <= 0).all()


def test_render_report_single_and_compare() -> None:
    df = synthetic_frame()
    m = compute_metrics(df, n_resamples=100, min_group_size=5)
    ctx = R.ReportContext(dataset="synthetic", split_note="all 60", cropped=False, interval_level=0.8)
    one = R.render_report([R.ModelEvaluation("model-a 1.0", df, m, {"name": "model-a"})], ctx,
                          gallery_size=6, load=fake_load)
    # 7 accuracy/trust plots + by-race and by-gender bars, all inline.
    assert one.count("data:image/png;base64,") == 9
    assert one.count("data:image/jpeg;base64,") + one.count("image unreadable") == 12
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", one)  # nothing fetched from elsewhere
    assert m["gaps"]["race"]["mae"]["sentence"] in one
    assert m["gaps"]["race"]["mae_age_std"]["sentence"] in one
    assert html.escape(m["gender_by_age_band_sentences"][0]) in one
    assert "Gender by true-age band" in one and "MAE, age-std." in one
    assert "Side by side" not in one and "60 images: 58 evaluated (1 of them" in one

    df2 = synthetic_frame(seed=1)
    m2 = compute_metrics(df2, n_resamples=100)
    evals = [R.ModelEvaluation("model-a 1.0", df, m), R.ModelEvaluation("model-b 2.0", df2, m2)]
    both = R.render_report(evals, ctx, gallery_size=2, load=fake_load)
    assert "Side by side" in both and both.count('id="model-') == 2
    table = both.split("Side by side")[1].split("</table>")[0]
    assert f"{m['mae']:.2f}" in table and f"{m2['mae']:.2f}" in table
    with pytest.raises(ValueError, match="no model results"):
        R.render_report([], ctx)
