"""Losses for each age head type plus the gender head, combined with the config's multi-task weights.

Unknown labels (NaN age, gender -1) are masked out of their term, so faces with one label still train
the other head. With a ``[teacher]`` the training loss adds the teacher head's distance to each face's
descriptor; faces without one (a NaN row) are masked out of that term in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..labels import AGE_BUCKET_AGES, age_bucket
from .config import LossConfig, TeacherConfig
from .data import Labels
from .models import HeadSpec


@dataclass
class LossParts:
    total: Tensor  # what is optimised: task + the weighted teacher term
    age: Tensor
    gender: Tensor
    task: Tensor  # the weighted age + gender loss alone, comparable with val_loss and a run without a teacher
    teacher: Tensor | None = None  # the unweighted teacher term, when the training step has one


def gaussian_targets(ages: Tensor, outputs: int, sigma: float) -> Tensor:
    """Label distributions: a normalised Gaussian over ages 0..outputs-1 centred on each (clipped) age."""
    grid = torch.arange(outputs, dtype=torch.float32, device=ages.device)
    centre = ages.clamp(0, outputs - 1)[:, None]
    t = torch.exp(-0.5 * ((grid[None, :] - centre) / sigma) ** 2)
    return t / t.sum(1, keepdim=True)


def expected_age(logits: Tensor, spec: HeadSpec) -> Tensor:
    """Point age estimate from the age head's raw outputs."""
    if spec.age_type == "regression":
        return logits[:, 0]
    if spec.age_type == "buckets5":
        return torch.tensor(AGE_BUCKET_AGES, device=logits.device)[logits.argmax(1)]
    grid = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return (logits.softmax(1) * grid).sum(1)


def _weighted_mean(per_sample: Tensor, weight: Tensor) -> Tensor:
    total = weight.sum()
    return (per_sample * weight).sum() / total.clamp_min(1e-12)


def age_loss(logits: Tensor, ages: Tensor, weight: Tensor, spec: HeadSpec, cfg: LossConfig,
             bucket_weights: Tensor | None = None) -> Tensor:
    known = ~torch.isnan(ages)
    if not known.any():
        return logits.sum() * 0.0
    logits, ages, weight = logits[known], ages[known], weight[known]
    if spec.age_type == "regression":
        return _weighted_mean((logits[:, 0] - ages).abs(), weight)  # MAE, the report's loss
    if spec.age_type == "buckets5":
        buckets = age_bucket(ages).long()
        # With class weights this is sum(w[y] * CE) / sum(w[y]), i.e. Keras' class_weight up to a constant.
        return F.cross_entropy(logits, buckets, weight=bucket_weights, label_smoothing=cfg.label_smoothing)
    log_p = logits.log_softmax(1)
    outputs = logits.shape[1]
    if spec.age_type == "distribution":
        target = gaussian_targets(ages, outputs, cfg.sigma)
        per = (target * (target.clamp_min(1e-12).log() - log_p)).sum(1)  # KL(target || p)
    else:  # mean_variance (Pan et al., 2018): CE on the rounded age + mean and variance penalties
        per = F.nll_loss(log_p, ages.round().clamp(0, outputs - 1).long(), reduction="none")
        p = log_p.exp()
        grid = torch.arange(outputs, dtype=p.dtype, device=p.device)
        mean = (p * grid).sum(1)
        var = (p * (grid[None, :] - mean[:, None]) ** 2).sum(1)
        per = per + cfg.mean_weight * 0.5 * (mean - ages) ** 2 + cfg.variance_weight * var
    if cfg.expectation_l1 > 0:
        grid = torch.arange(outputs, dtype=log_p.dtype, device=log_p.device)
        per = per + cfg.expectation_l1 * ((log_p.exp() * grid).sum(1) - ages).abs()
    return _weighted_mean(per, weight)


def gender_loss(logits: Tensor | None, genders: Tensor, cfg: LossConfig,
                class_weights: Tensor | None = None, sample_weights: Tensor | None = None) -> Tensor:
    """Cross-entropy over the faces of known gender; ``sample_weights`` (per face, e.g.
    ``data.gender_balance``) make it a weighted mean, on top of any ``class_weights``."""
    if logits is None:
        return torch.zeros(())
    known = genders >= 0
    if not known.any():
        return logits.sum() * 0.0
    if sample_weights is None:
        return F.cross_entropy(logits[known], genders[known], weight=class_weights,
                               label_smoothing=cfg.label_smoothing)
    per = F.cross_entropy(logits[known], genders[known], label_smoothing=cfg.label_smoothing, reduction="none")
    w = sample_weights[known].to(per.dtype)
    if class_weights is not None:  # the same sum(w * CE) / sum(w) as F.cross_entropy's own weighted mean
        w = w * class_weights.to(per.dtype)[genders[known]]
    return _weighted_mean(per, w)


def teacher_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """Mean distance of the teacher head's outputs to the descriptors over the rows that have one.

    Args:
        pred: (N, D) teacher head outputs.
        target: (N, D) descriptors; a row with any NaN has none and is masked out.
        kind: "cosine" (1 - cosine similarity: direction only; MSE between L2-normalised vectors is the
            same up to a factor 2) or "mse" (squared Euclidean distance of the raw vectors, the distance
            dlib's own 0.6 same-person threshold is on).

    Returns:
        A scalar; 0 (still attached to ``pred``) when no row has a descriptor.
    """
    known = ~torch.isnan(target).any(1)
    if not known.any():
        return pred.sum() * 0.0
    p, t = pred[known], target[known].to(pred.dtype)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(p, t, dim=1, eps=1e-8)).mean()
    return ((p - t) ** 2).sum(1).mean()


def _symmetric_kl(a: Tensor, b: Tensor) -> Tensor:
    """Mean over rows of (KL(p_a || p_b) + KL(p_b || p_a)) / 2 for two (N, K) logit tensors."""
    la, lb = a.log_softmax(1), b.log_softmax(1)
    pa, pb = la.exp(), lb.exp()
    return 0.5 * ((pa * (la - lb)).sum(1) + (pb * (lb - la)).sum(1)).mean()


def flip_consistency(age_logits: Tensor, gender_logits: Tensor | None) -> Tensor:
    """How differently the network answers a face and its mirror image.

    The batch is ``[faces; mirrored faces]`` (:func:`.data.with_mirror`): the first half's rows pair with the
    second half's. The age term is the symmetric KL divergence of the two age distributions (over years or
    buckets; config validation refuses a regression head, which has no distribution), the gender term the
    same for the two gender distributions.

    Raises:
        ValueError: an odd batch (not a face/mirror pair batch).
    """
    n = age_logits.shape[0]
    if n % 2:
        raise ValueError(f"flip consistency needs [faces; mirrors], got an odd batch of {n}")
    half = n // 2
    term = _symmetric_kl(age_logits[:half], age_logits[half:])
    if gender_logits is not None:
        term = term + _symmetric_kl(gender_logits[:half], gender_logits[half:])
    return term


class MultiTaskLoss:
    """Weighted sum of the age and gender terms for one head configuration."""

    def __init__(self, spec: HeadSpec, cfg: LossConfig, bucket_weights: Tensor | None = None,
                 gender_weights: Tensor | None = None, teacher: TeacherConfig | None = None):
        self.spec, self.cfg = spec, cfg
        self.bucket_weights, self.gender_weights = bucket_weights, gender_weights
        self.teacher = teacher if teacher is not None and teacher.descriptors else None

    def __call__(self, age_logits: Tensor, gender_logits: Tensor | None, labels: Labels,
                 teacher_out: Tensor | None = None) -> LossParts:
        """The weighted sum; the teacher term joins when both the head's output and the batch's descriptors
        are given (training steps; validation has neither, so val_loss stays comparable with a baseline)."""
        a = age_loss(age_logits, labels.age, labels.weight, self.spec, self.cfg, self.bucket_weights)
        g = gender_loss(gender_logits, labels.gender, self.cfg, self.gender_weights, labels.gender_weight)
        total = self.cfg.age * a + self.cfg.gender * g
        if self.teacher is None or teacher_out is None or labels.teacher is None:
            return LossParts(total, a, g, total)
        t = teacher_loss(teacher_out, labels.teacher, self.teacher.loss)
        return LossParts(total + self.teacher.weight * t, a, g, total, t)
