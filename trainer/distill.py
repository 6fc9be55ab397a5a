"""Knowledge distillation (Hinton et al., 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    soft_targets: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``α·T²·KL(p_T ‖ softmax(s/T)) + (1-α)·CE(s, y)``.

    ``soft_targets`` are the teacher's probabilities already taken at temperature T (they are
    refined across rounds as probabilities, so they are stored that way). The T² keeps the soft
    term's gradients on the scale of the hard term's as T changes.
    """
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    if soft_targets is None or alpha == 0.0:
        return hard
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    soft = F.kl_div(log_p, soft_targets, reduction="batchmean") * temperature**2
    return alpha * soft + (1.0 - alpha) * hard


def soft_labels(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.softmax(logits / temperature, dim=1)
