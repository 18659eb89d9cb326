"""Write a small labelled dataset in the 'own data' format: photos plus labels.csv (path,age,gender,identity).

The photos are variations of the bundled public-domain astronaut portrait (shifted, scaled, mirrored, lighter
or darker), so every one has a real face; the labels are random. It exists to try the training path of
docs/own-data.md end to end in a minute, and the tests follow that page on it. Its numbers mean nothing.

Usage: python scripts/make_example_dataset.py OUT_FOLDER [--count N] [--seed S]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from facial_demographics.commands.analyze import SAMPLE_PHOTO

GENDERS = ("male", "female", "m", "f", "0", "1")  # every accepted spelling appears


def variant(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One crop of the portrait around its face, randomly moved, scaled, mirrored and lit."""
    side = int(rng.integers(220, 300))
    x, y = int(rng.integers(100, 160)), int(rng.integers(0, 40))
    crop = photo.crop((x, y, x + side, y + side)).resize((160, 160))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return ImageEnhance.Brightness(crop).enhance(float(rng.uniform(0.7, 1.3)))


def make_dataset(out: Path, count: int = 40, seed: int = 0) -> Path:
    """Write ``count`` photos and ``out/labels.csv``; returns the CSV's path."""
    rng = np.random.default_rng(seed)
    photo = Image.open(SAMPLE_PHOTO).convert("RGB")
    (out / "photos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        name = f"photos/{i:03d}.jpg"
        variant(photo, rng).save(out / name, quality=90)
        rows.append({"path": name, "age": int(rng.integers(1, 90)), "gender": GENDERS[i % len(GENDERS)],
                     "identity": f"person{i // 2}"})  # two photos per person: they stay in one split
    labels = out / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "age", "gender", "identity"])
        writer.writeheader()
        writer.writerows(rows)
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {make_dataset(args.out, args.count, args.seed)} and {args.count} photos")


if __name__ == "__main__":
    main()
