"""Dynamic Fine-Tuning (DFT) loss fused with the LM-head projection, chunked over tokens.

DFT (https://arxiv.org/abs/2508.05629) rescales each token's cross-entropy by its detached probability:

    L = -(1/N) * sum_t sg(p(y_t)) * log p(y_t)        (N = number of non-ignored tokens)

so with p = softmax(z) and w = sg(p_y), dL/dz = (w/N) * (p - onehot_y). Plain cross-entropy is the case w = 1.

The full ``T x V`` logits are never materialized: tokens are processed in chunks whose fp32 logits fit a fixed
budget, and each chunk's logits are turned in place into dL/dz and folded straight into the hidden and weight
gradients. The gradients are therefore computed in the forward pass (like Liger's fused linear cross entropy) and
only scaled by ``grad_output`` in the backward. Ignored tokens are dropped before the projection, so they cost
nothing. Pure torch; on CUDA with Triton available the per-chunk transform runs as a Triton kernel
(``dft_loss_triton``).
"""

from __future__ import annotations

import importlib.util

import torch

from .fused_linear import FusedLinearDFTLoss, LossType, check_inputs


def logits_to_grad_(logits: torch.Tensor, targets: torch.Tensor, inv_n: float, dft: bool) -> torch.Tensor:
    """Overwrite fp32 ``logits`` (m, V) with dL/dz and return each token's loss ``-w * log p_y`` (m,).

    One softmax: the log-sum-exp gives ``log p_y = z_y - lse`` (hence ``p_y``), and the same exponentials, rescaled,
    give ``p`` for the gradient ``(w * inv_n) * (p - onehot_y)``.
    """
    target_logit = logits.gather(1, targets[:, None]).squeeze(1)
    row_max = logits.amax(1, keepdim=True)
    exp = logits.sub_(row_max).exp_()
    sum_exp = exp.sum(1, keepdim=True)
    log_p_y = target_logit - (row_max + sum_exp.log()).squeeze(1)
    w = log_p_y.exp() if dft else torch.ones_like(log_p_y)
    coef = w * inv_n
    exp.mul_(coef[:, None] / sum_exp)  # now coef * p
    exp.scatter_add_(1, targets[:, None], -coef[:, None])
    return -w * log_p_y


def fused_linear_dft_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    loss_type: LossType = "dft",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Mean DFT (or, with ``loss_type="ce"``, cross-entropy) loss of ``hidden @ weight.T`` against ``labels``.

    ``hidden`` is (T, H) or (B, T, H), ``weight`` the (V, H) LM head, ``labels`` (T,) or (B, T) with
    ``ignore_index`` marking tokens that do not count. ``chunk_size`` is tokens per chunk (default: fp32 logits of
    at most ``CHUNK_BYTES``). Returns an fp32 scalar; 0 with zero gradients when every label is ignored. On CUDA
    with Triton installed, the Triton kernel does the per-chunk softmax.
    """
    if hidden.is_cuda and importlib.util.find_spec("triton") is not None:
        from .dft_loss_triton import triton_fused_linear_dft_loss

        return triton_fused_linear_dft_loss(
            hidden, weight, labels, ignore_index=ignore_index, loss_type=loss_type, chunk_size=chunk_size
        )
    hidden, labels = check_inputs(hidden, weight, labels, loss_type)
    dft = loss_type == "dft"
    return FusedLinearDFTLoss.apply(hidden, weight, labels, ignore_index, dft, chunk_size, logits_to_grad_)
