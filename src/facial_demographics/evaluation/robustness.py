"""How much a model's answers move when the picture's quality changes, not the face.

A face photographed twice, once as a clean PNG and once as a phone JPEG, should get the same age and
gender. Each perturbation here is applied to the aligned faces of one split (from the face cache), and
we report accuracy under it and how far the answers move against the unperturbed faces: mean |Δ age|
and the share of faces whose gender flips. Sharpening is not among the training augmentations, so it
probes a change the model was not taught to ignore.

Runs on ONNX Runtime with numpy/OpenCV: no torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ..datasets.cache import load_cache, split_faces
from ..errors import InvalidValueError
from ..model import AgeGenderModel
from ..registry import ModelRef

Perturbation = Callable[[np.ndarray], np.ndarray]  # uint8 HxWx3 RGB -> same shape


def _jpeg(quality: int) -> Perturbation:
    def apply(face: np.ndarray) -> np.ndarray:
        ok, buf = cv2.imencode(".jpg", face[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:  # pragma: no cover - OpenCV always encodes a uint8 RGB array
            raise RuntimeError("JPEG encoding failed")
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if decoded is None:  # pragma: no cover
            raise RuntimeError("JPEG decoding failed")
        return np.ascontiguousarray(decoded[..., ::-1])
    return apply


def _blur(sigma: float) -> Perturbation:
    return lambda face: cv2.GaussianBlur(face, (0, 0), sigma)


def _downscale(factor: float) -> Perturbation:
    def apply(face: np.ndarray) -> np.ndarray:
        h, w = face.shape[:2]
        small = cv2.resize(face, (max(4, round(w * factor)), max(4, round(h * factor))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return apply


def _sharpen(amount: float) -> Perturbation:
    def apply(face: np.ndarray) -> np.ndarray:
        soft = cv2.GaussianBlur(face, (0, 0), 1.0).astype(np.float32)
        out = face.astype(np.float32) * (1 + amount) - soft * amount  # unsharp mask
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return apply


def _noise(std: float, seed: int = 0) -> Perturbation:
    def apply(face: np.ndarray) -> np.ndarray:
        # Seeded by content so a face gets the same noise whichever batch or model sees it.
        rng = np.random.default_rng([seed, int(face[::7, ::7].sum())])
        return np.clip(face.astype(np.float32) + rng.normal(0, std, face.shape) + 0.5, 0, 255).astype(np.uint8)
    return apply


PERTURBATIONS: dict[str, Perturbation] = {
    "jpeg q90": _jpeg(90),
    "jpeg q50": _jpeg(50),
    "jpeg q20": _jpeg(20),
    "blur σ1": _blur(1.0),
    "blur σ2": _blur(2.0),
    "downscale ½": _downscale(0.5),
    "downscale ¼": _downscale(0.25),
    "sharpen": _sharpen(1.0),  # not a training augmentation
    "noise σ8": _noise(8.0),
}


@dataclass(frozen=True)
class RobustnessRow:
    model: str
    perturbation: str
    mae: float
    gender_accuracy: float | None
    mean_age_shift: float  # mean |age(perturbed) - age(clean)|
    gender_flip_rate: float | None  # share of faces whose predicted gender changes


def perturb(faces: np.ndarray, name: str) -> np.ndarray:
    """Apply one named perturbation to every face of a uint8 (N, S, S, 3) batch."""
    if name == "clean":
        return faces
    if name not in PERTURBATIONS:
        raise InvalidValueError(f"unknown perturbation {name!r}; choose from clean, {', '.join(PERTURBATIONS)}")
    fn = PERTURBATIONS[name]
    return np.stack([fn(np.ascontiguousarray(f)) for f in faces]) if len(faces) else faces


def _predict(model: AgeGenderModel, faces: np.ndarray, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    ages, p_female = [], []
    for i in range(0, len(faces), batch):
        p = model.predict(faces[i:i + batch])
        ages.append(p.age)
        p_female.append(p.p_female)
    return np.concatenate(ages), np.concatenate(p_female)


def robustness(models: dict[str, AgeGenderModel], faces: np.ndarray, ages: np.ndarray, genders: np.ndarray,
               perturbations: Sequence[str] = ("clean", *PERTURBATIONS),
               progress: Callable[[str], None] | None = None) -> list[RobustnessRow]:
    """One row per model and perturbation. ``genders`` holds 0 male, 1 female, NaN unknown."""
    rows: list[RobustnessRow] = []
    known = ~np.isnan(genders)
    clean_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in perturbations:
        varied = perturb(faces, name)
        for label, model in models.items():
            if progress:
                progress(f"{label}: {name}")
            age, pf = _predict(model, varied)
            if label not in clean_cache:
                clean_cache[label] = (age, pf) if name == "clean" else _predict(model, faces)
            age0, pf0 = clean_cache[label]
            has_gender = not np.all(np.isnan(pf))
            pred_g, pred_g0 = pf >= 0.5, pf0 >= 0.5
            rows.append(RobustnessRow(
                model=label, perturbation=name,
                mae=float(np.mean(np.abs(age - ages))),
                gender_accuracy=float(np.mean(pred_g[known] == (genders[known] == 1)))
                if has_gender and known.any() else None,
                mean_age_shift=float(np.mean(np.abs(age - age0))),
                gender_flip_rate=float(np.mean(pred_g != pred_g0)) if has_gender else None,
            ))
    return rows


def plot(rows: Sequence[RobustnessRow], path: Path) -> None:
    """Bars of the mean age shift and the gender flip rate per perturbation, one colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in rows))
    names = [p for p in dict.fromkeys(r.perturbation for r in rows) if p != "clean"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(1, len(models))
    x = np.arange(len(names))
    for k, m in enumerate(models):
        by = {r.perturbation: r for r in rows if r.model == m}
        shift = [by[n].mean_age_shift for n in names]
        flips = [100 * (by[n].gender_flip_rate or 0.0) for n in names]
        axes[0].bar(x + k * width, shift, width, label=m)
        axes[1].bar(x + k * width, flips, width, label=m)
    for ax, title in zip(axes, ("mean |Δ age| against the clean face (years)", "gender flips (% of faces)"),
                         strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x + width * (len(models) - 1) / 2, names, rotation=35, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class RobustnessRun:
    """The rows of :func:`run_robustness` and what it measured them on."""

    rows: list[RobustnessRow]
    faces: int
    split: str
    cache: Path
    written: list[Path]  # robustness.json and robustness.png when an output folder was given


def _models_for(models: Sequence[ModelRef], size: int, device: str = "auto") -> dict[str, AgeGenderModel]:
    """Each bundle by a short label; each must take faces of the cache's ``size``."""
    loaded: dict[str, AgeGenderModel] = {}
    for m in models:
        model = AgeGenderModel(m, device=device)
        if model.bundle.input_size != size:
            raise InvalidValueError(f"{m or 'bundled model'}: takes {model.bundle.input_size} px faces, "
                                    f"the cache holds {size} px")
        label = "bundled" if m is None else Path(m).name or str(m)
        loaded[label if label not in loaded else str(m)] = model
    return loaded


def run_robustness(models: Sequence[ModelRef], cache_dir: Path, split_file: Path, split: str,
                   limit: int | None, out: Path | None, progress: Callable[[str], None] | None = None,
                   device: str = "auto") -> RobustnessRun:
    """Load the split's cached faces and run every model under every perturbation.

    Args:
        models: bundle directories (None: the bundled model).
        cache_dir: an aligned-face cache at the models' input size.
        split_file, split: which faces.
        limit: a seeded random sample of this many faces.
        out: write ``robustness.json`` and ``robustness.png`` here.
        progress: called with the perturbation being measured.

    Raises:
        DataError: no cached faces in the split.
        InvalidValueError: a model of another input size.
    """
    cache = load_cache(cache_dir)
    faces, index = split_faces(cache, split_file, split)  # DataError when the split selects nothing
    if limit is not None and limit < len(faces):
        pick = np.sort(np.random.default_rng(0).choice(len(faces), limit, replace=False))
        faces, index = faces[pick], index.iloc[pick]
    loaded = _models_for(models, cache.size, device)
    ages = index["age"].to_numpy(dtype=np.float64)
    genders = index["gender"].to_numpy(dtype=np.float64)  # 0 male, 1 female, NaN unknown
    rows = robustness(loaded, faces, ages, genders, progress=progress)
    written: list[Path] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "robustness.json").write_text(json.dumps(
            {"split": split, "faces": int(len(faces)), "cache": str(cache_dir),
             "rows": [asdict(r) for r in rows]}, indent=2))
        plot(rows, out / "robustness.png")
        written = [out / "robustness.json", out / "robustness.png"]
    return RobustnessRun(rows, int(len(faces)), split, Path(cache_dir), written)
