"""A contact sheet of the capture-condition augmentation (issue 33, ablation 4) on a real face.

One row per op (light gradient, flash, exposure, colour cast, sensor noise), each at probability 1 with the
ranges of ``--config`` (default ``v04_capture``), six draws per row; the colour-cast row steps through the
config's temperature range instead of drawing. Below them: all five ops together, and the config's whole
train-time augmentation (flip, affine, colour jitter, these ops at their probabilities, the quality ops).
The face is scikit-image's astronaut (bundled, no download) cropped to 112 px, the training input size, and
shown enlarged 2x. Nothing is timed or trained; it writes one PNG:

    PYTHONPATH=src .venv/bin/python benchmarks/augment_preview.py [--config v04_capture] \\
        [--out out/capture_augment.png]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import torch

from facial_demographics.training.config import AugmentConfig, load_config
from facial_demographics.training.data import Augment

#: (row label, the AugmentConfig key that switches the op on)
OPS = [("light gradient", "light_gradient"), ("flash", "flash"), ("exposure", "exposure"),
       ("colour cast", "color_cast"), ("sensor noise", "sensor_noise")]
COLUMNS, SIZE, ZOOM, LABEL_W = 6, 112, 2, 170


def astronaut_face() -> np.ndarray:
    """The astronaut's face as a 112 px uint8 RGB crop (the tests' crop)."""
    from skimage import data

    return cv2.resize(data.astronaut()[40:200, 150:310], (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def only(cfg: AugmentConfig, **on: float | list[float]) -> AugmentConfig:
    """``cfg``'s ranges with every op off except those in ``on``."""
    off = {f.name: 0.0 for f in dataclasses.fields(AugmentConfig) if f.type in ("float", float)}
    off.update(hflip=0.0, rotation=0.0, translate=0.0)
    return dataclasses.replace(cfg, scale=[1.0, 1.0], brightness=[1.0, 1.0], contrast=[1.0, 1.0],
                               saturation=[1.0, 1.0], **{**off, **on})  # type: ignore[arg-type]


def run(cfg: AugmentConfig, face: torch.Tensor, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    out = Augment(cfg)(face[None])[0]
    return out.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


def tile(image: np.ndarray, caption: str = "") -> np.ndarray:
    big = cv2.resize(image, (SIZE * ZOOM, SIZE * ZOOM), interpolation=cv2.INTER_NEAREST)
    framed = cv2.copyMakeBorder(big, 2, 18, 2, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    cv2.putText(framed, caption, (4, framed.shape[0] - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                cv2.LINE_AA)
    return framed


def label(text: str, height: int) -> np.ndarray:
    strip = np.full((height, LABEL_W, 3), 255, np.uint8)
    for i, line in enumerate(text.split("\n")):
        cv2.putText(strip, line, (6, 24 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def sheet(cfg: AugmentConfig, name: str) -> np.ndarray:
    image = astronaut_face()
    face = torch.from_numpy(image).permute(2, 0, 1).float()
    rows: list[tuple[str, list[np.ndarray]]] = [("original", [tile(image)] + [tile(np.full_like(image, 255))] * 5)]
    for title, key in OPS:
        if key == "color_cast":
            lo, hi = cfg.color_temperature
            kelvins = [float(k) for k in np.round(np.linspace(lo, hi, COLUMNS) / 500) * 500]
            tiles = [tile(run(only(cfg, color_cast=1.0, color_temperature=[k, k]), face, 0), f"{k:.0f} K")
                     for k in kelvins]
            ranges = f"{lo:.0f}-{hi:.0f} K"
        else:
            tiles = [tile(run(only(cfg, **{key: 1.0}), face, seed), f"draw {seed}") for seed in range(COLUMNS)]
            ranges = {
                "light_gradient": f"gain {cfg.light_gradient_gain}",
                "flash": f"gain {cfg.flash_gain}",
                "exposure": f"gamma {cfg.exposure_gamma}\ngain {cfg.exposure_gain}",
                "sensor_noise": f"shot {cfg.sensor_shot}\nread {cfg.sensor_read}",
            }[key]
        rows.append((f"{title}\n{ranges}\n(p=1; {name}: {getattr(cfg, key):g})", tiles))
    every = only(cfg, **{key: 1.0 for _, key in OPS})
    rows.append(("all five, p=1", [tile(run(every, face, seed), f"draw {seed}") for seed in range(COLUMNS)]))
    rows.append((f"{name}: whole\ntrain augmentation", [tile(run(cfg, face, seed), f"draw {seed}")
                                                         for seed in range(COLUMNS)]))
    lines = [np.hstack([label(text, tiles[0].shape[0]), *tiles]) for text, tiles in rows]
    return np.vstack(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="v04_capture", help="run config whose [augment] ranges to show")
    parser.add_argument("--out", type=Path, default=Path("out/capture_augment.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    image = sheet(cfg.augment, cfg.name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f"could not write {args.out}")
    print(f"{args.out}: {image.shape[1]}x{image.shape[0]} px, {len(OPS)} ops x {COLUMNS} draws")


if __name__ == "__main__":
    main()
