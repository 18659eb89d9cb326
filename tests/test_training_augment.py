"""Training augmentation: the image-quality ops (downscale, blur, noise, JPEG) on a real face, and that
configs without them build exactly the old pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facial_demographics.training.config import AugmentConfig, ConfigError, config_from_dict, load_config
from facial_demographics.training.data import Augment, RandomDownscale, RandomNoise


@pytest.fixture(scope="module")
def faces(astronaut: np.ndarray) -> torch.Tensor:
    """8 real 112 px face crops as a float [0, 255] NCHW batch."""
    crop = astronaut[40:200, 150:310]
    import cv2

    face = cv2.resize(crop, (112, 112), interpolation=cv2.INTER_AREA)
    batch = np.stack([np.roll(face, s, axis=1) for s in range(8)])
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float()


def _detail(x: torch.Tensor) -> torch.Tensor:
    """Per-image high-frequency energy: mean squared difference between neighbouring pixels."""
    return ((x[..., 1:] - x[..., :-1]) ** 2).mean(dim=(1, 2, 3))


def test_downscale_removes_detail_and_keeps_size(faces: torch.Tensor) -> None:
    x = faces / 255
    out = RandomDownscale(1.0, (0.25, 0.3))(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.all(_detail(out) < 0.6 * _detail(x))
    assert torch.equal(RandomDownscale(0.0, (0.25, 0.3))(x), x)


def test_noise_adds_detail_within_range(faces: torch.Tensor) -> None:
    x = faces / 255
    out = RandomNoise(1.0, (8 / 255, 12 / 255))(x)
    residual = (out - x).std(dim=(1, 2, 3)) * 255
    assert torch.all((residual > 5) & (residual < 13))
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(RandomNoise(0.0, (0.01, 0.02))(x), x.clamp(0, 1))


def test_quality_ops_run_in_the_default_recipe(faces: torch.Tensor) -> None:
    cfg = load_config("default").augment
    assert (cfg.jpeg, cfg.blur, cfg.noise, cfg.downscale) > (0, 0, 0, 0)
    names = [type(op).__name__ for op in Augment(cfg).ops]
    assert names[-4:] == ["RandomDownscale", "RandomGaussianBlur", "RandomNoise", "RandomJPEG"]
    every = AugmentConfig(jpeg=1.0, blur=1.0, noise=1.0, downscale=1.0, hflip=0.0)
    torch.manual_seed(0)
    out = Augment(every)(faces)
    assert out.shape == faces.shape and float(out.min()) >= 0 and float(out.max()) <= 255
    assert float((out - faces).abs().mean()) > 2  # every image was degraded
    torch.manual_seed(0)
    assert torch.equal(Augment(every)(faces), out)  # seeded, so runs repeat


@pytest.mark.parametrize("name", ["seed", "default_v0_1", "ablation_112_dldl", "ablation_128_dldl"])
def test_configs_without_quality_ops_build_the_previous_pipeline(name: str) -> None:
    """The 0.1.0 recipe and the ablations run on it must stay as they were run."""
    names = [type(op).__name__ for op in Augment(load_config(name).augment).ops]
    assert names == ["RandomHorizontalFlip", "RandomAffine", "ColorJitter"]


@pytest.mark.parametrize(("patch", "message"), [
    ({"jpeg": 1.5}, "augment.jpeg: must be a probability"),
    ({"noise": -0.1}, "augment.noise: must be a probability"),
    ({"jpeg_quality": [20, 120]}, "augment.jpeg_quality: must be within"),
    ({"jpeg_quality": [0, 50]}, "augment.jpeg_quality: must satisfy"),
    ({"downscale_range": [0.9, 0.3]}, "augment.downscale_range: must satisfy"),
    ({"downscale_range": [0.5, 1.5]}, "augment.downscale_range: must be within"),
    ({"blur_sigma": [0.0, 1.0]}, "augment.blur_sigma: must satisfy"),
    ({"noise_std": [5.0]}, "augment.noise_std: must be"),
])
def test_bad_quality_settings_name_the_key(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        config_from_dict({"augment": patch})
