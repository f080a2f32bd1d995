"""Triton version of the fused linear DFT loss, for CUDA.

The projection chunks stay torch GEMMs (cuBLAS); a Triton kernel replaces the per-chunk torch softmax: one program
per token makes an online log-sum-exp pass over its row of logits, then a second pass overwrites the row with
dL/dz = (w/N) * (p - onehot_y), as Liger's fused linear cross entropy does. Chunking, fp32 accumulation and the
autograd wrapper are shared with ``dft_loss`` (both import ``fused_linear``; neither imports the other at load).
It also runs on CPU tensors under ``TRITON_INTERPRET=1`` (tests).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .fused_linear import FusedLinearDFTLoss, LossType, check_inputs

MAX_BLOCK_SIZE = 32768


@triton.jit
def _dft_logits_to_grad_kernel(
    logits_ptr,
    logits_stride,
    targets_ptr,
    loss_ptr,
    n_cols,
    inv_n,
    DFT: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    # One program per token row of the fp32 logits chunk
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * logits_stride
    target = tl.load(targets_ptr + row)

    # Pass 1: online log-sum-exp over the vocabulary
    m = float("-inf")
    s = 0.0
    for start in range(0, n_cols, BLOCK_SIZE):
        offsets = start + tl.arange(0, BLOCK_SIZE)
        z = tl.load(row_ptr + offsets, mask=offsets < n_cols, other=float("-inf")).to(tl.float32)
        new_m = tl.maximum(m, tl.max(z, axis=0))
        s = s * tl.exp(m - new_m) + tl.sum(tl.exp(z - new_m), axis=0)
        m = new_m
    lse = m + tl.log(s)

    # p_y from the log-sum-exp; DFT weights the token by sg(p_y), cross-entropy by 1
    log_p_y = tl.load(row_ptr + target).to(tl.float32) - lse
    if DFT:
        w = tl.exp(log_p_y)
    else:
        w = 1.0
    tl.store(loss_ptr + row, -w * log_p_y)
    coef = w * inv_n

    # Pass 2: logits -> dL/dz in place
    for start in range(0, n_cols, BLOCK_SIZE):
        offsets = start + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n_cols
        z = tl.load(row_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        grad = coef * (tl.exp(z - lse) - tl.where(offsets == target, 1.0, 0.0))
        tl.store(row_ptr + offsets, grad, mask=mask)


def triton_logits_to_grad_(
    logits: torch.Tensor, targets: torch.Tensor, inv_n: float, dft: bool, block_size: int | None = None
) -> torch.Tensor:
    """Triton twin of ``dft_loss.logits_to_grad_``: fp32 ``logits`` (m, V) become dL/dz; returns per-token losses."""
    rows, n_cols = logits.shape
    block = block_size or min(MAX_BLOCK_SIZE, triton.next_power_of_2(n_cols))
    losses = torch.empty(rows, device=logits.device, dtype=torch.float32)
    _dft_logits_to_grad_kernel[(rows,)](
        logits,
        logits.stride(0),
        targets,
        losses,
        n_cols,
        inv_n,
        DFT=dft,
        BLOCK_SIZE=block,
        num_warps=min(32, max(4, block // 1024)),
    )
    return losses


def triton_fused_linear_dft_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    loss_type: LossType = "dft",
    chunk_size: int | None = None,
    block_size: int | None = None,
) -> torch.Tensor:
    """Same contract as ``dft_loss.fused_linear_dft_loss``; ``block_size`` is the kernel's vocabulary tile."""
    hidden, labels = check_inputs(hidden, weight, labels, loss_type)
    transform = functools.partial(triton_logits_to_grad_, block_size=block_size)
    dft = loss_type == "dft"
    return FusedLinearDFTLoss.apply(hidden, weight, labels, ignore_index, dft, chunk_size, transform)
