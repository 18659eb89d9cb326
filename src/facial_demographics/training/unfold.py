"""Training weights from an exported fp32 bundle, so that a run can fine-tune a shipped model.

The ONNX export folds every BatchNorm into the convolution before it (W' = W * g / s, b' = beta - mu * g / s
with s = sqrt(var + eps)), and a training checkpoint is not shipped. :func:`weights_from_bundle` builds
the config's network, copies each folded convolution into it and "unfolds" its BatchNorm so that:

- in eval mode the network computes exactly the bundle's function: BN(y) = (y - m) / sqrt(v + eps) * gamma
  + beta with gamma = sqrt(v + eps) and beta = m + b' is y + b' whatever m and v are;
- in train mode, where BatchNorm normalises by the batch's statistics, it computes nearly the same
  function, because m and v are the per-channel mean and variance of that layer's input measured on
  augmented training faces (a fine-tune starting from gamma = 1, beta = b' would begin far from the model).

Convolutions are matched to the graph's Conv nodes in the order the network runs them (recorded with
forward hooks), and the result is checked against ONNX Runtime on the same faces before it is returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError
from ..model import ModelBundle
from .config import RunConfig
from .export import ExportWrapper, onnx_parity
from .models import AgeGenderNet, build_model

#: The largest difference in logits allowed between the rebuilt network and the bundle's graph.
PARITY_TOLERANCE = 1e-3


class UnfoldError(UserError, ValueError):
    """The bundle cannot be turned into this config's training weights."""


def weights_from_bundle(bundle: str | Path, cfg: RunConfig, batches: Iterable[Tensor]) -> dict[str, Tensor]:
    """The state dict of ``cfg``'s network that reproduces the fp32 bundle ``bundle``.

    Args:
        bundle: an exported fp32 bundle: a registry name (``"fp32"``) or a directory.
        cfg: the run's config; its ``model.name`` and ``data.input_size`` must be the bundle's.
        batches: float NCHW inputs in [0, 255] at the input size (augmented training faces): the
            BatchNorm statistics are measured on them and the parity check runs on the first.

    Returns:
        The weights, for ``AgeGenderNet.load_state_dict`` (a ``[teacher]`` head keeps its fresh start).

    Raises:
        BundleError: not a valid bundle (see ``ModelBundle.load``).
        UnfoldError: the bundle is INT8, was trained with another backbone or input size, its graph does not
            match the network, or the rebuilt network disagrees with it.
    """
    import onnx
    from onnx import numpy_helper

    loaded = ModelBundle.load(bundle)
    _check_bundle(loaded, cfg)
    graph = onnx.load(str(loaded.graph_path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    folded = [(inits.get(node.input[1]), inits.get(node.input[2]) if len(node.input) > 2 else None)
              for node in graph.node if node.op_type == "Conv"]
    model = build_model(cfg, pretrained=False).eval()  # eval: the teacher head, if any, stays out of forward
    batches = iter(batches)
    first = next(batches)
    pairs = _conv_bn_pairs(model, first[:2])
    if len(folded) < len(pairs):
        raise UnfoldError(f"{loaded.root}: the graph has {len(folded)} convolutions, the {cfg.model.name} "
                          f"network {len(pairs)}")
    with torch.no_grad():
        for (conv, bn), (weight, bias) in zip(pairs, folded, strict=False):
            _load_folded(conv, bn, weight, bias, loaded.root)
        _load_heads(model, inits, loaded.root)
        _measure_statistics(model, [bn for _, bn in pairs if bn is not None], [first, *batches])
    diff = onnx_parity(loaded.graph_path, ExportWrapper(model, bool(loaded.spec.tta_flip)).eval(), first.numpy())
    if not diff < PARITY_TOLERANCE:
        raise UnfoldError(f"{loaded.root}: the rebuilt network differs from the graph by {diff:.3g} in logits")
    return model.state_dict()


def _check_bundle(bundle: ModelBundle, cfg: RunConfig) -> None:
    spec, root = bundle.spec, bundle.root
    trained_as = (spec.source.get("training") or {}).get("model")
    if spec.precision != "fp32":
        raise UnfoldError(f"{root}: an {spec.precision} bundle; fine-tuning needs the fp32 one")
    if trained_as != cfg.model.name:
        raise UnfoldError(f"{root}: trained as {trained_as!r}, the config builds {cfg.model.name!r}")
    if bundle.input_size != cfg.data.input_size:
        raise UnfoldError(f"{root}: input size {bundle.input_size}, the config's is {cfg.data.input_size}")


def _conv_bn_pairs(model: AgeGenderNet, x: Tensor) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Each convolution in the order one forward pass runs them, with the BatchNorm that normalises its
    output (None where its output goes elsewhere): the order of the exported graph's Conv nodes."""
    calls: list[tuple[nn.Module, Tensor, Tensor]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: calls.append((mod, inp[0], out)))
             for m in model.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d | None]] = []
    for i, (module, _, out) in enumerate(calls):
        if isinstance(module, nn.Conv2d):
            nxt = calls[i + 1] if i + 1 < len(calls) else None
            bn = nxt[0] if nxt is not None and isinstance(nxt[0], nn.BatchNorm2d) and nxt[1] is out else None
            pairs.append((module, bn))
    return pairs


def _load_folded(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, weight: np.ndarray | None,
                 bias: np.ndarray | None, bundle: Path) -> None:
    if weight is None or tuple(weight.shape) != tuple(conv.weight.shape):
        raise UnfoldError(f"{bundle}: a convolution's weight is {None if weight is None else weight.shape}, "
                          f"the network's {tuple(conv.weight.shape)}")
    conv.weight.copy_(torch.tensor(weight))
    b = torch.zeros(conv.out_channels) if bias is None else torch.tensor(bias)
    if bn is None:
        if conv.bias is None:
            if bias is not None and np.any(bias):
                raise UnfoldError(f"{bundle}: a convolution with a bias where the network has none")
        else:
            conv.bias.copy_(b)
        return
    if conv.bias is not None:
        conv.bias.zero_()
    assert bn.running_mean is not None and bn.running_var is not None, "BatchNorm without running statistics"
    bn.weight.fill_(1.0)
    bn.bias.copy_(b)
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)  # (y - 0) / sqrt(1 - eps + eps) * 1 + b' = y + b'


def _load_heads(model: AgeGenderNet, inits: dict[str, np.ndarray], bundle: Path) -> None:
    """The heads keep their names in the graph (``model.<head>...``)."""
    for name, tensor in model.state_dict().items():
        if not name.startswith(("age_head.", "gender_head.")):
            continue
        value = inits.get(f"model.{name}")
        if value is None or tuple(value.shape) != tuple(tensor.shape):
            raise UnfoldError(f"{bundle}: no {tuple(tensor.shape)} initializer for the network's {name}")
        tensor.copy_(torch.tensor(value))


def _measure_statistics(model: AgeGenderNet, norms: list[nn.BatchNorm2d], batches: Iterable[Tensor]) -> None:
    """Set each BatchNorm's running statistics to its input's per-channel mean and variance over ``batches``
    and its gamma, beta so that the eval-mode output does not change (see the module docstring)."""
    sums: dict[nn.BatchNorm2d, list[Tensor]] = {bn: [torch.zeros(0)] * 3 for bn in norms}

    def record(bn: nn.Module, inp: tuple[Tensor, ...], _: Tensor) -> None:
        y = inp[0].double().transpose(0, 1).flatten(1)
        s = sums[bn]  # type: ignore[index]
        first = s[0].numel() == 0
        s[0] = y.sum(1) if first else s[0] + y.sum(1)
        s[1] = (y * y).sum(1) if first else s[1] + (y * y).sum(1)
        s[2] = torch.tensor(float(y.shape[1])) if first else s[2] + y.shape[1]

    hooks = [bn.register_forward_hook(record) for bn in norms]
    try:
        for x in batches:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    for bn, (total, squares, count) in sums.items():
        mean = total / count
        assert bn.running_mean is not None and bn.running_var is not None, "BatchNorm without running statistics"
        var = (squares / count - mean * mean).clamp_min(0)
        bn.running_mean.copy_(mean.float())
        bn.running_var.copy_(var.float())
        bn.weight.copy_((var + bn.eps).sqrt().float())
        bn.bias.add_(mean.float())
