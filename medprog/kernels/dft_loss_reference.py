"""Reference DFT loss: full logits, ``log_softmax`` and autograd. Correct and simple, and O(T x V) memory.

It is the ground truth the fused kernels (``dft_loss``, ``dft_loss_triton``) are tested and benchmarked against.
"""

from __future__ import annotations

from typing import Literal

import torch


def naive_dft_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    loss_type: Literal["dft", "ce"] = "dft",
) -> torch.Tensor:
    """Mean of ``-sg(p_y) * log p_y`` (``"dft"``) or ``-log p_y`` (``"ce"``) over the non-ignored tokens.

    ``hidden`` (..., H), ``weight`` (V, H), ``labels`` (...). The softmax runs in fp32; 0 when every label is ignored.
    """
    if loss_type not in ("dft", "ce"):
        raise ValueError(f"loss_type must be 'dft' or 'ce', got {loss_type!r}")
    logits = (hidden @ weight.T).float()
    log_probs = torch.log_softmax(logits, dim=-1)
    mask = labels != ignore_index
    log_p_y = log_probs.gather(-1, labels.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
    per_token = -log_p_y
    if loss_type == "dft":
        per_token = per_token * log_p_y.exp().detach()
    return (per_token * mask).sum() / mask.sum().clamp(min=1)
