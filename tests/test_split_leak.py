"""``benchmarks/split_leak.py`` on a generated UTKFace-named folder: twins found, counted by split, scored.

The images are smooth random pictures (fixed seed); one is saved a second time, re-encoded at a lower
JPEG quality under another age label, which is what UTKFace's near-duplicates look like.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests_support import load_benchmark

pytest.importorskip("imagehash")

sl = load_benchmark("split_leak")

NAMES = [f"{age}_{gender}_0_2017011{i}000000000.jpg.chip.jpg"
         for i, (age, gender) in enumerate([(30, 0), (31, 1), (55, 0), (8, 1), (70, 0)])]
TWIN = "41_0_0_20170119000000000.jpg.chip.jpg"  # NAMES[0] again, re-encoded, labelled 41 instead of 30
SPLITS = {NAMES[0]: "train", NAMES[1]: "train", NAMES[2]: "val", NAMES[3]: "test", NAMES[4]: "train",
          TWIN: "test"}


def _picture(rng: np.random.Generator) -> Image.Image:
    coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((200, 200), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("utk")
    rng = np.random.default_rng(7)
    pictures = [_picture(rng) for _ in NAMES]
    for name, picture in zip(NAMES, pictures, strict=True):
        picture.save(root / name, quality=95)
    pictures[0].save(root / TWIN, quality=40)
    return root


@pytest.fixture(scope="module")
def hashed(dataset: Path) -> tuple[list[str], list[float | None], np.ndarray]:
    return sl.perceptual_hashes(dataset)


def test_the_reencoded_copy_is_the_only_near_pair(hashed: tuple[list[str], list[float | None], np.ndarray]) -> None:
    keys, ages, hashes = hashed
    pairs = sl.near_pairs(hashes, max_distance=4, chunk=2)  # a small chunk crosses block boundaries
    assert [{keys[p.a], keys[p.b]} for p in pairs] == [{NAMES[0], TWIN}]
    assert pairs[0].distance <= 4
    assert {ages[pairs[0].a], ages[pairs[0].b]} == {30.0, 41.0}


def test_leak_table_counts_twins_by_split(hashed: tuple[list[str], list[float | None], np.ndarray]) -> None:
    keys, ages, hashes = hashed
    splits = [SPLITS[k] for k in keys]
    pairs = sl.near_pairs(hashes, max_distance=4)
    assert sl.twins_in_train(pairs, splits, keys, "test") == {TWIN}
    assert sl.twins_in_train(pairs, splits, keys, "val") == set()
    last = sl.leak_table(pairs, keys, ages, splits, 4)[-1]
    assert last == "| 4 | 1 | 1 | 0 of 1 (0.0 %) | 1 of 2 (50.0 %) |"


def test_accuracy_row_compares_twins_with_the_rest(tmp_path: Path) -> None:
    rows = [  # key, true age, predicted age, true gender, predicted gender, status
        (TWIN, 41, 40, "male", "male", "ok"),        # twin: bucket right, gender right
        (NAMES[3], 8, 30, "female", "female", "ok"),  # bucket wrong, gender right
        ("other.jpg", 60, 55, "male", "female", "ok"),  # bucket right, gender wrong
        ("broken.jpg", 20, 20, "male", "male", "no_face"),  # not scored
    ]
    path = tmp_path / "predictions.csv"
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["key", "true_age", "pred_age", "true_gender", "pred_gender", "status"])
        out.writerows(rows)
    row = sl.accuracy_row("m", sl.read_scored(path), {TWIN}, 4)
    assert row.startswith("| m | ≤ 4 | 1 / 2 | 100.0 % / 50.0 % (+50.0 ± ")
    assert row.split("|")[5].strip().startswith("100.0 % / 50.0 % (+50.0 ± ")  # the gender cell
