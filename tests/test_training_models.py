"""Networks: EfficientNet-Lite0 loads the packaged ImageNet weights strictly and recognises a cat; the
seed CNN has the report's layer types; neither the package nor its inference modules import torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from facial_demographics.training.config import config_from_dict, load_config
from facial_demographics.training.models import (
    EfficientNetLite,
    SeparableConv2d,
    build_model,
    count_parameters,
    lite_pretrained_path,
    load_lite_imagenet,
)

torch.set_num_threads(2)


def test_lite0_loads_packaged_weights_strictly_and_knows_a_cat() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    cv2 = pytest.importorskip("cv2")
    model = EfficientNetLite(num_classes=1000)
    state = torch.load(lite_pretrained_path(), map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    assert model._blocks[0].has_expand is False and not hasattr(model._blocks[0], "_expand_conv")
    assert model._bn0.eps == 1e-3 and model._bn0.momentum == 0.01
    model.eval()
    img = cv2.resize(skimage_data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = torch.from_numpy((img - 127.0) / 128.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(probs.argmax()) == 285  # ImageNet "Egyptian cat"


def test_our_lite0_drops_fc_and_fits_the_size_budget() -> None:
    cfg = load_config("default")
    model = build_model(cfg, pretrained=False)
    assert not any(k.startswith("trunk.backbone._fc") for k in model.state_dict())
    assert count_parameters(model) * 4 < 15e6  # float32 ONNX must stay under 15 MB
    backbone = EfficientNetLite(num_classes=None)
    load_lite_imagenet(backbone)  # strict, without _fc
    age, gender = model(torch.rand(2, 3, 112, 112) * 255)
    assert age.shape == (2, 101) and gender is not None and gender.shape == (2, 2)


def test_seed_cnn_has_the_reports_layers() -> None:
    cfg = load_config("seed")
    model = build_model(cfg)
    trunk_layers = list(model.trunk.modules())
    seps = [m for m in trunk_layers if isinstance(m, SeparableConv2d)]
    assert len(seps) == len(cfg.model.channels)
    for sep in seps:  # depthwise (groups = in channels) then pointwise 1x1
        assert sep.depthwise.groups == sep.depthwise.in_channels == sep.depthwise.out_channels
        assert sep.pointwise.kernel_size == (1, 1)
    full_convs = [m for m in trunk_layers
                  if isinstance(m, nn.Conv2d) and m.groups == 1 and m.kernel_size != (1, 1)]
    assert not full_convs  # no plain Conv2D: every spatial conv is depthwise
    assert sum(isinstance(m, nn.MaxPool2d) for m in trunk_layers) == len(cfg.model.channels)
    assert sum(isinstance(m, nn.Dropout2d) for m in trunk_layers) >= 2
    # Dropout2d only in the later half of the trunk.
    body = list(model.trunk.modules())[1]
    assert isinstance(body, nn.Sequential)
    first_sd = next(i for i, m in enumerate(body) if isinstance(m, nn.Dropout2d))
    first_sep = next(i for i, m in enumerate(body) if isinstance(m, SeparableConv2d))
    assert first_sd > first_sep
    # One shared trunk, two separate FC heads.
    assert model.gender_head is not None and model.age_head is not model.gender_head
    assert isinstance(model.age_head[-1], nn.Linear) and model.age_head[-1].out_features == 5
    assert model.gender_head[-1].out_features == 2
    assert any(isinstance(m, nn.Dropout) and 0.2 <= m.p <= 0.35 for m in model.age_head)
    age, gender = model.eval()(torch.rand(2, 3, 198, 198) * 255)
    assert age.shape == (2, 5) and gender is not None and gender.shape == (2, 2)


def test_seed_wiki_is_a_single_regression_output() -> None:
    model = build_model(load_config("seed_wiki")).eval()
    age, gender = model(torch.rand(3, 3, 180, 180) * 255)
    assert age.shape == (3, 1) and gender is None


def test_mean_variance_head_has_101_outputs() -> None:
    cfg = config_from_dict({"heads": {"age": "mean_variance", "gender": False},
                            "model": {"pretrained": False}})
    age, gender = build_model(cfg).eval()(torch.rand(1, 3, 64, 64) * 255)
    assert age.shape == (1, 101) and gender is None


def test_package_and_training_entry_do_not_import_torch() -> None:
    code = ("import sys, facial_demographics, facial_demographics.training; "
            "import facial_demographics.commands.train; "
            "bad = [m for m in ('torch', 'kornia') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_keras_init_is_glorot_uniform_with_zero_biases() -> None:
    raw = load_config("seed").to_dict()
    raw["model"]["init"] = "keras"
    torch.manual_seed(0)
    model = build_model(config_from_dict(raw))
    sep = next(m for m in model.trunk.modules() if isinstance(m, SeparableConv2d))
    for conv in (sep.depthwise, sep.pointwise):
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(conv.weight)
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        w = conv.weight.detach()
        # Uniform on [-bound, bound]: bounded, and spread over most of the range.
        assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert dense and all(float(m.bias.detach().abs().max()) == 0.0 for m in dense)
    assert float(sep.pointwise.bias.detach().abs().max()) == 0.0
    # The depthwise kernel's range equals Keras' for its (3, 3, in, 1) kernel: fan sum 9 * (in + 1).
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(sep.depthwise.weight)
    assert fan_in + fan_out == 9 * (sep.depthwise.in_channels + 1)
    torch_default = build_model(load_config("seed"))
    assert float(next(m for m in torch_default.modules() if isinstance(m, nn.Linear)).bias.detach().abs().max()) > 0


@pytest.mark.parametrize(("optim", "cls", "settings"), [
    ({"name": "rmsprop", "rho": 0.9, "eps": 1e-7}, torch.optim.RMSprop,
     {"alpha": 0.9, "eps": 1e-7, "momentum": 0, "centered": False}),
    ({"name": "adam", "eps": 1e-7}, torch.optim.Adam, {"eps": 1e-7}),
    ({"name": "sgd", "momentum": 0.0}, torch.optim.SGD, {"momentum": 0.0, "nesterov": False}),
])
def test_optimizers_take_keras_settings(optim: dict, cls: type, settings: dict) -> None:
    from facial_demographics.training.optim import make_optimizer

    cfg = config_from_dict({"model": {"name": "seed_cnn", "channels": [8]}, "heads": {"age": "buckets5"},
                            "optim": optim})
    opt = make_optimizer(build_model(cfg), cfg, 0.008)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.008 and {k: group[k] for k in settings} == settings
