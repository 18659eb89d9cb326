"""Capture-condition augmentation (issue 33, ablation 4): light gradient, flash, exposure, colour cast and
sensor noise. Off by default, where the pipeline must be exactly the previous one; on, each op must move the
picture the way its capture condition does, inside [0, 255]."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from facial_demographics.training.config import AugmentConfig, ConfigError, config_from_dict, load_config
from facial_demographics.training.data import (
    Augment,
    RandomDownscale,
    RandomNoise,
    RandomSensorNoise,
    capture_ops,
    planckian_rows,
)

#: Every capture op's probability key.
CAPTURE_KEYS = ("light_gradient", "flash", "exposure", "color_cast", "sensor_noise")


@pytest.fixture(scope="module")
def faces(astronaut: np.ndarray) -> torch.Tensor:
    """8 real 112 px face crops as a float [0, 255] NCHW batch."""
    import cv2

    face = cv2.resize(astronaut[40:200, 150:310], (112, 112), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.stack([np.roll(face, s, axis=1) for s in range(8)])).permute(0, 3, 1, 2).float()


def _grey(value: float = 128.0, n: int = 8, size: int = 64) -> torch.Tensor:
    return torch.full((n, 3, size, size), value)


def _only(**on: Any) -> AugmentConfig:
    """No flip and nothing else: only the ops named."""
    return AugmentConfig(hflip=0.0, **on)


def _previous_pipeline(cfg: AugmentConfig) -> nn.Sequential:
    """The augmentation as it was built before the capture ops (a copy of the old ``Augment.__init__``)."""
    import kornia.augmentation as K

    ops: list[nn.Module] = []
    if cfg.hflip > 0:
        ops.append(K.RandomHorizontalFlip(p=cfg.hflip))
    if cfg.rotation > 0 or cfg.translate > 0 or tuple(cfg.scale) != (1.0, 1.0):
        ops.append(K.RandomAffine(
            degrees=cfg.rotation, translate=(cfg.translate, cfg.translate) if cfg.translate > 0 else None,
            scale=(cfg.scale[0], cfg.scale[1]) if tuple(cfg.scale) != (1.0, 1.0) else None,
            padding_mode="reflection", p=1.0))
    b, c, s = list(cfg.brightness), list(cfg.contrast), list(cfg.saturation)
    if any(r != [1.0, 1.0] for r in (b, c, s)):
        ops.append(K.ColorJitter(brightness=b, contrast=c, saturation=s, p=1.0))
    if cfg.downscale > 0:
        ops.append(RandomDownscale(cfg.downscale, (cfg.downscale_range[0], cfg.downscale_range[1])))
    if cfg.blur > 0:
        lo, hi = cfg.blur_sigma
        k = 2 * int(np.ceil(3 * hi)) + 1
        ops.append(K.RandomGaussianBlur((k, k), (lo, hi), p=cfg.blur))
    if cfg.noise > 0:
        ops.append(RandomNoise(cfg.noise, (cfg.noise_std[0] / 255.0, cfg.noise_std[1] / 255.0)))
    if cfg.jpeg > 0:
        ops.append(K.RandomJPEG(jpeg_quality=(cfg.jpeg_quality[0], cfg.jpeg_quality[1]), p=cfg.jpeg))
    return nn.Sequential(*ops)


def _check_image(out: torch.Tensor, like: torch.Tensor) -> None:
    assert out.dtype == torch.float32 and out.shape == like.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0


@pytest.mark.parametrize("name", ["default", "seed", "v04_morph"])
def test_off_by_default_and_output_unchanged(name: str, faces: torch.Tensor) -> None:
    cfg = load_config(name).augment
    assert all(getattr(cfg, key) == 0 for key in CAPTURE_KEYS)
    assert capture_ops(cfg) == []
    torch.manual_seed(7)
    expected = _previous_pipeline(cfg)(faces / 255.0) * 255.0
    torch.manual_seed(7)
    assert torch.equal(Augment(cfg)(faces), expected)
    # Ranges without their probability change nothing either.
    cfg.light_gradient_gain, cfg.color_temperature, cfg.sensor_shot = [0.5, 0.9], [3000.0, 3000.0], [40.0, 50.0]
    torch.manual_seed(7)
    assert torch.equal(Augment(cfg)(faces), expected)


def test_capture_ops_sit_between_colour_jitter_and_quality_ops() -> None:
    cfg = load_config("v04_capture").augment
    assert all(0.15 <= getattr(cfg, key) <= 0.3 for key in CAPTURE_KEYS)
    names = [type(op).__name__ for op in Augment(cfg).ops]
    assert names == ["RandomHorizontalFlip", "RandomAffine", "ColorJitter",
                     "RandomLinearIllumination", "RandomGaussianIllumination", "RandomPlanckianJitter",
                     "RandomGamma", "RandomSensorNoise",
                     "RandomDownscale", "RandomGaussianBlur", "RandomNoise", "RandomJPEG"]
    assert [type(op).__name__ for op in Augment(AugmentConfig(enabled=False, flash=1.0)).ops] == []


def test_light_gradient_makes_one_side_brighter() -> None:
    torch.manual_seed(0)
    x = _grey(n=32)
    out = Augment(_only(light_gradient=1.0, light_gradient_gain=[0.2, 0.3]))(x)
    _check_image(out, x)
    sides = torch.stack([out[..., :, :8].mean((1, 2, 3)), out[..., :, -8:].mean((1, 2, 3)),
                         out[..., :8, :].mean((1, 2, 3)), out[..., -8:, :].mean((1, 2, 3))], 1)
    lr, tb = (sides[:, 0] - sides[:, 1]).abs(), (sides[:, 2] - sides[:, 3]).abs()
    # Each image has one lit (or shadowed) edge: 0.2-0.3 of white, less the 8 px bands' average.
    assert torch.all(torch.maximum(lr, tb) > 0.15 * 255) and torch.all(torch.minimum(lr, tb) < 1e-3)
    assert torch.all(out.std(dim=1) < 1e-4)  # the same in every channel: light, not colour
    brighter = (out.mean((1, 2, 3)) > 128).sum()
    assert 0 < brighter < 32  # both signs are drawn: lit sides and shadows


def test_flash_brightens_the_centre_more_than_the_corners() -> None:
    torch.manual_seed(0)
    x = _grey()
    out = Augment(_only(flash=1.0, flash_gain=[0.2, 0.25]))(x)
    _check_image(out, x)
    centre, corner = out[..., 28:36, 28:36].mean((1, 2, 3)), out[..., :4, :4].mean((1, 2, 3))
    assert torch.all(out >= x - 1e-3)  # brightens only
    assert torch.all(centre > 128 + 0.1 * 255) and torch.all(centre - corner > 0.05 * 255)


def test_over_exposure_brightens_mid_greys_and_blows_highlights() -> None:
    torch.manual_seed(0)
    ramp = torch.linspace(0, 255, 64).view(1, 1, 1, 64).expand(8, 3, 64, 64).contiguous()
    out = Augment(_only(exposure=1.0, exposure_gamma=[0.6, 0.8], exposure_gain=[1.2, 1.4]))(ramp)
    _check_image(out, ramp)
    mid = slice(24, 40)
    assert torch.all(out[..., mid].mean((1, 2, 3)) > ramp[..., mid].mean() + 20)
    assert torch.all(out[..., -4:] == 255.0)  # clipped, as a sensor saturates
    # Under-exposure is a range away: gamma > 1, gain < 1 darken.
    dark = Augment(_only(exposure=1.0, exposure_gamma=[1.5, 2.0], exposure_gain=[0.8, 0.9]))(_grey())
    assert torch.all(dark < 100)


@pytest.mark.parametrize(("kelvin", "warm"), [([3000.0, 4500.0], True), ([9000.0, 15000.0], False)])
def test_colour_cast_follows_the_temperature(kelvin: list[float], warm: bool) -> None:
    torch.manual_seed(0)
    x = _grey()
    out = Augment(_only(color_cast=1.0, color_temperature=kelvin))(x)
    _check_image(out, x)
    r, g, b = out.mean((2, 3)).unbind(1)
    assert torch.allclose(g, torch.full_like(g, 128.0))  # kornia scales red and blue against green
    assert torch.all(r - b > 40) if warm else torch.all(b - r > 40)


def test_planckian_rows_are_the_500_kelvin_steps() -> None:
    assert planckian_rows((3000.0, 15000.0)) == list(range(25))
    assert planckian_rows((6500.0, 6500.0)) == [7]
    assert planckian_rows((4000.0, 9000.0)) == list(range(2, 13))
    assert planckian_rows((4100.0, 4200.0)) == [2]  # rounded to the nearest rows, never empty


def test_sensor_noise_grows_with_the_signal_per_channel() -> None:
    torch.manual_seed(0)
    dark, bright = _grey(10.0), _grey(200.0)
    op = Augment(_only(sensor_noise=1.0, sensor_shot=[12.0, 12.0], sensor_read=[1.0, 1.0]))
    out_dark, out_bright = op(dark), op(bright)
    for out, x in ((out_dark, dark), (out_bright, bright)):
        _check_image(out, x)
    std_dark, std_bright = out_dark.std((2, 3)), out_bright.std((2, 3))  # per image and channel
    # sqrt(12^2 * x + 1): 2.6 at 10/255, 10.7 at 200/255 (far enough from white not to clip)
    assert torch.all((std_dark > 2.0) & (std_dark < 3.3)) and torch.all((std_bright > 10.0) & (std_bright < 11.4))
    channels = (out_bright - bright)[0].flatten(1)
    assert float(torch.corrcoef(channels).triu(1).abs().max()) < 0.1  # independent per channel


def test_sensor_noise_probability_and_device_of_its_draws() -> None:
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(RandomSensorNoise(0.0, (0.05, 0.05), (0.01, 0.01))(x), x)
    torch.manual_seed(1)
    out = RandomSensorNoise(0.5, (0.05, 0.05), (0.02, 0.02))(_grey(128.0, n=64) / 255)
    changed = (out != 128.0 / 255).flatten(1).any(1)
    assert 16 < int(changed.sum()) < 48  # about half the images
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:  # parameters come from the CPU generator, the noise on the tensor's device
        torch.manual_seed(2)
        y = RandomSensorNoise(1.0, (0.05, 0.05), (0.02, 0.02))(_grey(n=4).to(device) / 255)
        assert y.device.type == device


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_every_capture_op_on_a_real_face(faces: torch.Tensor, device: str) -> None:
    every = _only(**{key: 1.0 for key in CAPTURE_KEYS})
    augment = Augment(every).to(device)
    x = faces.to(device)
    torch.manual_seed(0)
    out = augment(x)
    assert out.device == x.device
    _check_image(out.cpu(), faces)
    assert torch.all((out - x).abs().mean((1, 2, 3)) > 3)  # every face changed
    torch.manual_seed(0)
    assert torch.equal(augment(x), out)  # seeded, so runs repeat
    for key in CAPTURE_KEYS:  # and each op alone
        torch.manual_seed(0)
        one = Augment(_only(**{key: 1.0})).to(device)(x)
        _check_image(one.cpu(), faces)
        assert float((one - x).abs().mean()) > 1, key


@pytest.mark.parametrize(("patch", "message"), [
    ({"flash": 1.5}, "augment.flash: must be a probability"),
    ({"light_gradient": -0.1}, "augment.light_gradient: must be a probability"),
    ({"exposure": 2}, "augment.exposure: must be a probability"),
    ({"color_cast": 1.01}, "augment.color_cast: must be a probability"),
    ({"sensor_noise": -1}, "augment.sensor_noise: must be a probability"),
    ({"light_gradient_gain": [0.1, 1.5]}, "augment.light_gradient_gain: must be within"),
    ({"flash_gain": [0.3, 0.1]}, "augment.flash_gain: must satisfy"),
    ({"exposure_gamma": [0.0, 1.0]}, "augment.exposure_gamma: must satisfy"),
    ({"exposure_gain": [1.0]}, "augment.exposure_gain: must be"),
    ({"color_temperature": [2000, 6500]}, "augment.color_temperature: must satisfy"),
    ({"color_temperature": [6500, 20000]}, "augment.color_temperature: must be within"),
    ({"sensor_shot": [-1, 5]}, "augment.sensor_shot: must satisfy"),
    ({"sensor_read": [1, 300]}, "augment.sensor_read: must be within"),
    ({"flash": "yes"}, "augment.flash: expected"),
])
def test_bad_capture_settings_name_the_key(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        config_from_dict({"augment": patch})
