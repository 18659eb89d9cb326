"""How differently does a model read a face and its mirror image, and what does flip TTA buy? (issue 33)

Flip test-time augmentation averages a face's and its mirror's outputs; the flip-consistency loss
(``loss.flip_consistency``) tries to make one pass as good as the two. This measures, for each bundle, on the
aligned validation faces of each dataset in a cache: the single pass on the face, on its mirror, their average
(what flip TTA approximates: the graphs average logits, not ages), how far apart the two answers are, and how
often they disagree on gender. Give bundles *without* flip TTA (``fast``, or ``export --no-tta``): a graph with
TTA gives the same answer for a face and its mirror by construction.

    PYTHONPATH=src .venv/bin/python benchmarks/flip_consistency.py --model fast --model out/bundles/fast-0.3.0

Prints a markdown table per dataset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from facial_demographics.datasets.cache import load_cache, split_faces
from facial_demographics.model import AgeGenderModel, ModelBundle
from facial_demographics.training.compare import to_markdown


def both_passes(model: AgeGenderModel, faces: np.ndarray, batch: int = 128) -> tuple[np.ndarray, ...]:
    """(age, P(female)) on each face and on its mirror image; faces are (N, H, W, 3)."""
    ages, mirror_ages, p, mirror_p = [], [], [], []
    for i in range(0, len(faces), batch):
        x = faces[i:i + batch]
        plain, mirrored = model.predict(x), model.predict(np.ascontiguousarray(x[:, :, ::-1]))
        ages.append(plain.age)
        mirror_ages.append(mirrored.age)
        p.append(plain.p_female)
        mirror_p.append(mirrored.p_female)
    return tuple(np.concatenate(v) for v in (ages, mirror_ages, p, mirror_p))


def row(name: str, true_age: np.ndarray, passes: tuple[np.ndarray, ...]) -> dict[str, str]:
    age, mirror_age, p, mirror_p = passes
    gap = np.abs(age - mirror_age)
    return {
        "model": name,
        "MAE, face": f"{np.mean(np.abs(age - true_age)):.3f}",
        "MAE, mirror": f"{np.mean(np.abs(mirror_age - true_age)):.3f}",
        "MAE, mean of both": f"{np.mean(np.abs((age + mirror_age) / 2 - true_age)):.3f}",
        "mean / 95th pct / max \\|Δ age\\|": f"{gap.mean():.2f} / {np.percentile(gap, 95):.2f} / {gap.max():.1f}",
        "faces > 10 years apart": str(int((gap > 10).sum())),
        "gender disagrees": f"{100 * np.mean((p >= 0.5) != (mirror_p >= 0.5)):.2f} %",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="bundle name or folder (repeatable)")
    parser.add_argument("--cache", type=Path, default=Path("cache/utkface-morph-112"))
    parser.add_argument("--split-file", action="append", default=None,
                        help="one dataset's split CSV (repeatable; default: splits/utkface.csv, splits/morph.csv)")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    cache = load_cache(args.cache)
    models = [(name, ModelBundle.load(name)) for name in args.model]
    for name, bundle in models:
        if bundle.spec.tta_flip:
            parser.error(f"{name}: has flip TTA built in (its face and mirror answers are equal); give a bundle "
                         "without it (e.g. fast, or export --no-tta)")
    for split_file in args.split_file or ["splits/utkface.csv", "splits/morph.csv"]:
        faces, rows = split_faces(cache, split_file, args.split)
        true_age = rows["age"].to_numpy(dtype=float)
        table = [row(f"{name} {bundle.spec.version}", true_age, both_passes(AgeGenderModel(bundle), faces))
                 for name, bundle in models]
        print(f"\n{split_file}, {args.split} split: {len(faces)} aligned faces\n")
        print(to_markdown(pd.DataFrame(table)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
