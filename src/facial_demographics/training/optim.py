"""Optimiser, learning-rate schedule and EMA from a run config (timm's ``create_optimizer``/``create_scheduler``)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .config import RunConfig


def make_optimizer(model: nn.Module, cfg: RunConfig, lr: float) -> torch.optim.Optimizer:
    """Weight decay on conv/linear weights only (not on norms and biases)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    o = cfg.optim
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, eps=o.eps)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=lr, eps=o.eps)
    if o.name == "rmsprop":  # Keras' RMSprop: no momentum, not centred; rho is torch's alpha
        return torch.optim.RMSprop(groups, lr=lr, alpha=o.rho, eps=o.eps)
    return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, nesterov=o.momentum > 0)


def make_scheduler(opt: torch.optim.Optimizer, cfg: RunConfig, lr: float, steps_per_epoch: int,
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedules, so a resumed run continues mid-curve at exactly the same lr."""
    s = cfg.schedule
    if s.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total_steps, 2),
                                                   pct_start=s.pct_start)
    if s.name == "step":
        def factor(step: int) -> float:
            return float(s.gamma ** ((step // steps_per_epoch) // s.step_epochs))
    elif s.name == "cosine":
        warmup = int(round(s.warmup_epochs * steps_per_epoch))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    else:
        def factor(step: int) -> float:
            return 1.0
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
