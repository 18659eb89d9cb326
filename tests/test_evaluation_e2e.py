"""End to end: ``evaluate_dataset`` runs the real pipeline (detector + an untrained bundle) and the
numbers in metrics.json are checked against a direct computation from predictions.csv."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facial_demographics.evaluation.evaluate import evaluate_dataset
from facial_demographics.model import write_bundle

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")


def load(out: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    df = pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[""])
    return df, json.loads((out / "metrics.json").read_text())


# --------------------------------------------------------------------------- synthetic set (always runs)


@pytest.fixture(scope="module")
def synthetic_utk(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> tuple[Path, Path]:
    """A UTKFace-named folder: four photos of a face, one of noise, one truncated JPEG; all in 'test'."""
    root = tmp_path_factory.mktemp("utk")
    photo = Image.fromarray(astronaut)
    images = {
        "35_0_0_20170101000000001.jpg.chip.jpg": photo,
        "50_1_1_20170101000000002.jpg.chip.jpg": photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "8_1_2_20170101000000003.jpg.chip.jpg": photo.resize((300, 300)),
        "70_0_3_20170101000000004.jpg.chip.jpg": photo.crop((100, 0, 400, 300)),
        "20_0_4_20170101000000005.jpg.chip.jpg":
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)),
    }
    for name, im in images.items():
        im.save(root / name, quality=90)
    truncated = (root / next(iter(images))).read_bytes()[:400]
    (root / "40_1_0_20170101000000006.jpg.chip.jpg").write_bytes(truncated)
    split = root.parent / f"{root.name}-split.csv"
    split.write_text("key,split\n" + "".join(f"{p.name},test\n" for p in sorted(root.iterdir())))
    return root, split


def test_synthetic_statuses_full_images(synthetic_utk: tuple[Path, Path], tiny_bundle: Path,
                                        tmp_path: Path) -> None:
    root, split = synthetic_utk
    evaluate_dataset(root, model=tiny_bundle, split_file=split, out=tmp_path, n_resamples=50)
    df, m = load(tmp_path)
    assert len(df) == 6
    status = dict(zip(df["key"].str[:6], df["status"], strict=True))
    assert status["40_1_0"] == "unreadable" and status["20_0_4"] == "no_face"
    assert all(status[k] == "ok" for k in ("35_0_0", "50_1_1", "8_1_2_", "70_0_3"))
    assert m["counts"] == {"images": 6, "evaluated": 4, "no_face": 1, "fallback": 0, "unreadable": 1}
    assert m["model"]["name"] == "untrained-test" and len(m["model"]["sha256"]) == 64
    assert df.loc[df["status"] == "unreadable", "error"].str.len().gt(0).all()
    assert (tmp_path / "report.html").stat().st_size > 10_000
    with pytest.raises(ValueError, match="not a model bundle"):  # checked before any image is read
        evaluate_dataset(root, model=tiny_bundle, compare=[tmp_path], split_file=split, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_synthetic_cropped_fallback_and_compare(synthetic_utk: tuple[Path, Path], tiny_bundle: Path,
                                                tmp_path: Path) -> None:
    root, split = synthetic_utk
    # Same graph, gender labels swapped: every gender prediction flips, so the accuracies add up to 1.
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    manifest["name"] = "untrained-swapped"
    manifest["heads"]["gender"]["labels"] = manifest["heads"]["gender"]["labels"][::-1]
    swapped = write_bundle(tmp_path / "swapped", tiny_bundle / "model.onnx",
                           {k: v for k, v in manifest.items() if k not in ("sha256", "format")})
    out = tmp_path / "eval"
    evals = evaluate_dataset(root, model=tiny_bundle, split_file=split, cropped=True, out=out,
                             compare=[swapped], n_resamples=50)
    assert [e.label for e in evals.evaluations] == ["untrained-test 0.0.0", "untrained-swapped 0.0.0"]
    df, m = load(out)
    df2, m2 = load(out / "compare" / "1-untrained-swapped-0.0.0")
    assert m["counts"] == {"images": 6, "evaluated": 5, "no_face": 0, "fallback": 1, "unreadable": 1}
    assert df.loc[df["key"].str.startswith("20_0_4"), "status"].item() == "fallback"
    assert list(df["key"]) == list(df2["key"])
    assert np.allclose(df["pred_age"], df2["pred_age"], equal_nan=True)
    assert m["gender_accuracy"] + m2["gender_accuracy"] == pytest.approx(1.0)
    html = (out / "report.html").read_text()
    assert "Side by side" in html and "untrained-swapped 0.0.0" in html


# --------------------------------------------------------------------------- real UTKFace sample


@pytest.fixture(scope="module")
def utk_eval(utkface_dir: Path, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("utk-eval")
    evaluate_dataset(utkface_dir, model=tiny_bundle, cropped=True, limit=40, out=out, n_resamples=300,
                     min_group_size=5)
    return out


def test_utkface_metrics_match_predictions_csv(utk_eval: Path) -> None:
    df, m = load(utk_eval)
    assert len(df) == 40 and m["counts"]["images"] == 40
    assert m["counts"]["evaluated"] == int(df["status"].isin(["ok", "fallback"]).sum())
    for status in ("no_face", "fallback", "unreadable"):
        assert m["counts"][status] == int((df["status"] == status).sum())
    ev = df[df["status"].isin(["ok", "fallback"])]
    err = (ev["pred_age"] - ev["true_age"]).to_numpy()
    assert m["mae"] == pytest.approx(np.mean(np.abs(err)))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
    for k in (1, 5, 10):
        assert m[f"cs{k}"] == pytest.approx(np.mean(np.abs(err) <= k))
    lo, hi = m["mae_ci95"]
    assert lo < m["mae"] < hi
    inside = (ev["age_low"] <= ev["true_age"]) & (ev["true_age"] <= ev["age_high"])
    assert m["interval_coverage"] == pytest.approx(inside.mean())

    tb, pb = np.minimum(ev["true_age"] // 25, 4), np.minimum(ev["pred_age"] // 25, 4)
    assert m["bucket5_accuracy"] == pytest.approx((tb == pb).mean())
    table = pd.crosstab(tb, pb).reindex(index=range(5), columns=range(5), fill_value=0)
    assert m["bucket5_confusion"] == table.to_numpy().tolist()

    t, p = ev["true_gender"].to_numpy(), ev["pred_gender"].to_numpy()
    assert m["gender_accuracy"] == pytest.approx(np.mean(t == p))
    assert m["gender_recall"]["female"] == pytest.approx(np.mean(p[t == "female"] == "female"))
    assert m["gender_confusion"] == [[int(np.sum((t == a) & (p == b))) for b in ("male", "female")]
                                     for a in ("male", "female")]
    pf = ev["p_female"].to_numpy()
    pos, neg = pf[t == "female"], pf[t == "male"]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert m["gender_auc"] == pytest.approx(pairs / (len(pos) * len(neg)))
    bins = np.minimum((pf * 10).astype(int), 9)
    ece = sum(np.mean(bins == b) * abs(pf[bins == b].mean() - np.mean(t[bins == b] == "female"))
              for b in np.unique(bins))
    assert m["gender_ece"] == pytest.approx(ece)

    bands = pd.cut(ev["true_age"], [0, 13, 20, 40, 60, 80, 1000], right=False,
                   labels=["0-12", "13-19", "20-39", "40-59", "60-79", "80+"])
    for band, rows in ev.groupby(bands, observed=False):
        got = m["by_age_band"][str(band)]
        assert got["n"] == len(rows)
        if len(rows):
            assert got["mae"] == pytest.approx((rows["pred_age"] - rows["true_age"]).abs().mean())
            assert got["bias"] == pytest.approx((rows["pred_age"] - rows["true_age"]).mean())
    for race, rows in ev.groupby("race"):
        assert m["by_race"][race]["n"] == len(rows)
        assert m["by_race"][race]["mae"] == pytest.approx((rows["pred_age"] - rows["true_age"]).abs().mean())
    gap = m["gaps"]["race"]["mae"]
    eligible = {r: v["mae"] for r, v in m["by_race"].items() if v["n"] >= 5}
    if len(eligible) >= 2:
        assert gap["gap"] == pytest.approx(max(eligible.values()) - min(eligible.values()))
        assert gap["max_group"] == max(eligible, key=eligible.__getitem__) and "gap" in gap["sentence"]
    assert m["run"]["cropped"] is True and "sample of 40" in m["run"]["selection"]


def test_report_renders_offline_in_chromium(utk_eval: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    external: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})

            def block(route: Any) -> None:
                url = route.request.url
                if url.startswith(("file:", "data:")):
                    route.continue_()
                else:
                    external.append(url)
                    route.abort()

            page.route("**/*", block)
            page.goto((utk_eval / "report.html").as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
            title = page.title()
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert external == []
    assert title == "Evaluation report"
    assert len(images) >= 9 + 2  # plots plus gallery thumbnails
    assert all(done and width > 0 for done, width in images), images
    with Image.open(shot) as im:
        assert im.width >= 1200 and im.height > 3000
    keep = REPO / "out" / "screenshots" / "report.png"
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, keep)
