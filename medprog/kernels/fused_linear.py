"""The shared core of the fused linear DFT loss: chunked projection, fp32 accumulation, autograd.

``dft_loss`` (the torch per-chunk transform) and ``dft_loss_triton`` (the Triton one) both build on
this module, which imports neither, so the two never import each other's module. Pure torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

LossType = Literal["dft", "ce"]
# (fp32 logits chunk (m, V), targets (m,), 1/N, dft) -> per-token losses (m,); turns the chunk into dL/dz in place
ChunkTransform = Callable[[torch.Tensor, torch.Tensor, float, bool], torch.Tensor]

# Budget for one chunk of fp32 logits
CHUNK_BYTES = 256 * 2**20
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def default_chunk_size(num_tokens: int, vocab_size: int) -> int:
    """Tokens per chunk so that a chunk's fp32 logits stay within ``CHUNK_BYTES`` (a multiple of 64 when possible)."""
    rows = max(1, CHUNK_BYTES // (4 * vocab_size))
    if rows >= 64:
        rows -= rows % 64
    return max(1, min(rows, num_tokens))


def _mm_fp32(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, accumulate: bool = False) -> None:
    """``out = a @ b`` (or ``out += a @ b``) into an fp32 ``out``, never rounding the product to fp16/bf16."""
    if a.dtype == torch.float32:
        if accumulate:
            out.addmm_(a, b)
        else:
            torch.mm(a, b, out=out)
    elif accumulate:  # CUDA fp16/bf16: the GEMM writes its fp32 accumulator directly
        torch.addmm(out, a, b, out_dtype=torch.float32, out=out)
    else:
        torch.mm(a, b, out_dtype=torch.float32, out=out)


def fused_linear_dft_forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int,
    dft: bool,
    chunk_size: int | None,
    transform: ChunkTransform,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Loss (fp32 scalar) and the gradients of hidden (T, H) and weight (V, H) in their input dtypes.

    The gradient of an input that does not require grad is ``None``. On CPU (and for fp32) the operands are
    upcast to fp32 once; on CUDA fp16/bf16 they stay in their dtype and the GEMMs output fp32.
    """
    num_tokens, hidden_size = hidden.shape
    vocab_size = weight.shape[0]
    need_hidden, need_weight = hidden.requires_grad, weight.requires_grad
    device = hidden.device

    rows = (labels != ignore_index).nonzero().squeeze(1)
    n = rows.numel()
    loss = torch.zeros((), device=device, dtype=torch.float32)
    grad_rows = torch.empty(n, hidden_size, device=device, dtype=torch.float32) if need_hidden else None
    grad_weight = torch.zeros(vocab_size, hidden_size, device=device, dtype=torch.float32) if need_weight else None

    if n > 0:
        compute_dtype = hidden.dtype if hidden.is_cuda and hidden.dtype in _LOW_PRECISION else torch.float32
        x = (hidden if n == num_tokens else hidden.index_select(0, rows)).to(compute_dtype)
        targets = labels.index_select(0, rows)
        w = weight.to(compute_dtype)
        step = chunk_size or default_chunk_size(n, vocab_size)
        buf = torch.empty(min(step, n), vocab_size, device=device, dtype=torch.float32)
        for start in range(0, n, step):
            end = min(start + step, n)
            x_chunk = x[start:end]
            z = buf[: end - start]
            _mm_fp32(z, x_chunk, w.t())
            loss += transform(z, targets[start:end], 1.0 / n, dft).sum()
            g = z.to(compute_dtype)
            if grad_rows is not None:
                _mm_fp32(grad_rows[start:end], g, w)
            if grad_weight is not None:
                _mm_fp32(grad_weight, g.t(), x_chunk, accumulate=True)
        loss /= n

    grad_hidden = None
    if grad_rows is not None:
        if n == num_tokens:
            grad_hidden = grad_rows.to(hidden.dtype)
        else:
            grad_hidden = torch.zeros_like(hidden).index_copy_(0, rows, grad_rows.to(hidden.dtype))
    if grad_weight is not None:
        grad_weight = grad_weight.to(weight.dtype)
    return loss, grad_hidden, grad_weight


class FusedLinearDFTLoss(torch.autograd.Function):
    """Autograd wrapper: gradients come from the forward; the backward only scales them by ``grad_output``."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,
        ignore_index: int,
        dft: bool,
        chunk_size: int | None,
        transform: ChunkTransform,
    ) -> torch.Tensor:
        loss, grad_hidden, grad_weight = fused_linear_dft_forward(
            hidden, weight, labels, ignore_index, dft, chunk_size, transform
        )
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        if not torch.equal(grad_output, torch.ones_like(grad_output)):
            grad_hidden = None if grad_hidden is None else grad_hidden * grad_output.to(grad_hidden.dtype)
            grad_weight = None if grad_weight is None else grad_weight * grad_output.to(grad_weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


def check_inputs(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, loss_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the arguments and flatten (B, T, H) / (B, T) inputs to (B*T, H) / (B*T,)."""
    if loss_type not in ("dft", "ce"):
        raise ValueError(f"loss_type must be 'dft' or 'ce', got {loss_type!r}")
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} do not match")
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(f"labels {tuple(labels.shape)} do not match hidden {tuple(hidden.shape)}")
    return hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
