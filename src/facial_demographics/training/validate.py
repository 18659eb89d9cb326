"""Validation: the evaluated weights, flip test-time augmentation and the per-epoch metrics."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from ..labels import age_buckets
from .data import FaceBatches, to_input
from .losses import MultiTaskLoss, expected_age
from .models import AgeGenderNet, HeadSpec


def eval_model(model: AgeGenderNet, ema: AveragedModel | None) -> AgeGenderNet:
    """The weights that are evaluated, selected and exported: the EMA copy when there is one."""
    return ema.module if ema is not None else model  # type: ignore[return-value]


def predict_logits(model: AgeGenderNet, x: Tensor, tta_flip: bool) -> tuple[Tensor, Tensor | None]:
    age, gender = model(x)
    if tta_flip:
        age_f, gender_f = model(x.flip(-1))
        age = (age + age_f) / 2
        gender = (gender + gender_f) / 2 if gender is not None and gender_f is not None else None
    return age, gender


@torch.no_grad()
def evaluate(model: AgeGenderNet, batches: FaceBatches, spec: HeadSpec, loss_fn: MultiTaskLoss,
             size: int, tta_flip: bool = False, channels_last: bool = False) -> dict[str, float]:
    """Val loss, age MAE, CS@5, 5-bucket accuracy and gender accuracy over all batches."""
    was_training = model.training
    model.eval()
    preds, ages, g_pred, g_true, losses, counts = [], [], [], [], [], []
    age_bucket_hits: list[np.ndarray] = []
    for faces, labels in batches.epoch(0):
        age_logits, gender_logits = predict_logits(model, to_input(faces, size, channels_last), tta_flip)
        losses.append(float(loss_fn(age_logits, gender_logits, labels).total))
        counts.append(len(faces))
        known = ~torch.isnan(labels.age)
        pred = expected_age(age_logits, spec)
        preds.append(pred[known].numpy())
        ages.append(labels.age[known].numpy())
        if spec.age_type == "buckets5":
            true_b = age_buckets(labels.age[known].numpy().astype(np.float64))
            age_bucket_hits.append(age_logits[known].argmax(1).numpy() == true_b)
        if gender_logits is not None:
            gk = labels.gender >= 0
            g_pred.append(gender_logits[gk].argmax(1).numpy())
            g_true.append(labels.gender[gk].numpy())
    model.train(was_training)
    p = np.concatenate(preds).astype(np.float64) if preds else np.zeros(0)
    a = np.concatenate(ages).astype(np.float64) if ages else np.zeros(0)
    err = np.abs(p - a)
    if spec.age_type == "buckets5":
        bucket_acc = float(np.concatenate(age_bucket_hits).mean()) if len(a) else math.nan
    else:
        bucket_acc = float((age_buckets(p) == age_buckets(a)).mean()) if len(a) else math.nan
    gp = np.concatenate(g_pred) if g_pred else np.zeros(0)
    gt = np.concatenate(g_true) if g_true else np.zeros(0)
    return {
        "val_loss": float(np.average(losses, weights=counts)) if losses else math.nan,
        "val_mae": float(err.mean()) if len(a) else math.nan,
        "val_cs5": float((err <= 5).mean()) if len(a) else math.nan,
        "val_bucket_acc": bucket_acc,
        "val_gender_acc": float((gp == gt).mean()) if len(gt) else math.nan,
    }
