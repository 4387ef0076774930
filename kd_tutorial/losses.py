"""Knowledge-distillation losses: pure functions of tensors.

Notation (the same as the notebooks): student logits ``z_s``, teacher logits
``z_t``, temperature ``T``, weight ``alpha``, hard labels ``y``, batch size ``B``::

    p_t^T = softmax(z_t / T)            q_s^T = softmax(z_s / T)
    L_soft = T^2 * KL(p_t^T || q_s^T)   averaged over the batch
    L_hard = CE(y, softmax(z_s))        at T = 1, over labelled rows only
    L      = alpha * L_soft + (1 - alpha) * L_hard

Every function returns a scalar tensor, and none lets a gradient reach the
teacher's logits (they are detached).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_LABEL = -1  # IMDB's ``unsupervised`` split: no label, never part of a cross-entropy


def _full(x: torch.Tensor) -> torch.Tensor:
    """Compute losses in at least float32, even when autocast produced bf16 / fp16 logits."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def softmax_with_temperature(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softened class probabilities: ``softmax(z / T)`` over the last dimension.

    ``T = 1`` is the ordinary softmax; ``T > 1`` flattens the distribution and
    reveals the teacher's "dark knowledge"; ``T -> 0`` tends to one-hot.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return F.softmax(logits / temperature, dim=-1)


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(p_t^T || q_s^T)``, averaged over the batch (``reduction="batchmean"``).

    ``KL(p || q) = sum_c p_c (log p_c - log q_c)``. ``F.kl_div`` takes the
    student's *log*-probabilities first and the teacher's probabilities second.
    """
    T = float(temperature)
    log_q = F.log_softmax(_full(student_logits) / T, dim=-1)
    log_p = F.log_softmax(_full(teacher_logits.detach()) / T, dim=-1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * T * T


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * H(p_t^T, q_s^T) = -T^2 * mean_b sum_c p_t^T log q_s^T``.

    It differs from :func:`kl_divergence` by ``T^2 * H(p_t^T)``, the teacher's
    entropy, which does not depend on the student: the gradients are identical,
    the logged values are not (this one is never below the teacher's entropy).
    """
    T = float(temperature)
    log_q = F.log_softmax(_full(student_logits) / T, dim=-1)
    p = F.softmax(_full(teacher_logits.detach()) / T, dim=-1)
    return -(p * log_q).sum(dim=-1).mean() * T * T


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``mean over b, c of (z_s - z_t)^2``: equals ``F.mse_loss(z_s, z_t)`` (mean reduction).

    The high-temperature limit of distillation: for zero-mean logits and ``C``
    classes, ``T^2 * KL -> (1 / 2C) * sum_c (z_s - z_t)^2``, so averaged over the
    batch ``T^2 * KL -> 0.5 * logit_mse`` as ``T -> inf`` (Hinton et al. 2015,
    section 2.1; Tang et al. 2019 train on this loss directly).
    """
    return F.mse_loss(_full(student_logits), _full(teacher_logits.detach()), reduction="mean")


def hard_cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``CE(y, softmax(z_s))`` at ``T = 1``, averaged over labelled rows (``y != -1``).

    Returns 0 (with a gradient path) when no row in the batch has a label.
    """
    labelled = labels != IGNORE_LABEL
    if not bool(labelled.any()):
        return student_logits.sum() * 0.0
    return F.cross_entropy(_full(student_logits[labelled]), labels[labelled])


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      labels: torch.Tensor | None, temperature: float = 2.0,
                      alpha: float = 0.5) -> torch.Tensor:
    """Hinton, Vinyals & Dean (2015)::

        L = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))    (batch mean)
          + (1 - alpha) * CE(y, softmax(z_s))                          (labelled rows)

    Rows labelled ``-1`` (unlabelled transfer reviews) contribute only to the
    soft term. ``labels=None`` means no row is labelled. With ``alpha=1`` the
    hard term is skipped entirely.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    soft = kl_divergence(student_logits, teacher_logits, temperature)
    if labels is None or alpha == 1.0:
        return alpha * soft
    return alpha * soft + (1.0 - alpha) * hard_cross_entropy(student_logits, labels)
