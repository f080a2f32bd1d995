"""The fused DFT loss kernels (torch and Triton) against the full-logits reference: loss and both gradients.

The Triton kernel runs on CPU under the Triton interpreter. ``TRITON_INTERPRET=1`` must be set before triton is
imported, so ``test_triton_interpreter`` reruns this file's Triton cases in a subprocess with it set.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from medprog.kernels.dft_loss import fused_linear_dft_loss
from medprog.kernels.dft_loss_reference import naive_dft_loss

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None
T, H, V = 16, 32, 100


@dataclass(frozen=True)
class Case:
    loss_type: str = "dft"
    dtype: torch.dtype = torch.float32
    ignored: tuple[int, ...] = (1, 4, 9)  # positions whose label is ignore_index
    ignore_index: int = -100
    chunk_size: int | None = None  # tokens per chunk; None: the kernel's default (one chunk here)
    batched: bool = False  # (B, T, H) hidden states with (B, T) labels

    def __str__(self) -> str:
        return (
            f"{self.loss_type}-{str(self.dtype).removeprefix('torch.')}-ign{len(self.ignored)}"
            f"-chunk{self.chunk_size}{'-batched' if self.batched else ''}"
        )


CASES = [
    Case(),
    Case(loss_type="ce"),
    Case(chunk_size=5),
    Case(loss_type="ce", chunk_size=5),
    Case(ignored=()),
    Case(ignored=tuple(range(T))),
    Case(loss_type="ce", ignored=tuple(range(T))),
    Case(ignore_index=-1, chunk_size=3),
    Case(batched=True, chunk_size=5),
    Case(dtype=torch.bfloat16, chunk_size=5),
    Case(loss_type="ce", dtype=torch.bfloat16),
]


def _inputs(case: Case, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(T, H, generator=gen) * (3 / H**0.5)  # logits of std ~3: p_y spread over (0, 1)
    weight = torch.randn(V, H, generator=gen)
    labels = torch.randint(0, V, (T,), generator=gen)
    labels[list(case.ignored)] = case.ignore_index
    if case.batched:
        hidden, labels = hidden.view(2, T // 2, H), labels.view(2, T // 2)
    return hidden.to(case.dtype), weight.to(case.dtype), labels


def _loss_and_grads(fn: Callable[..., torch.Tensor], hidden, weight, labels, **kwargs):
    hidden = hidden.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    loss = fn(hidden, weight, labels, **kwargs)
    loss.backward()
    return loss.detach(), hidden.grad, weight.grad


def _check(impl: Callable[..., torch.Tensor], case: Case) -> None:
    hidden, weight, labels = _inputs(case)
    got = _loss_and_grads(
        impl,
        hidden,
        weight,
        labels,
        ignore_index=case.ignore_index,
        loss_type=case.loss_type,
        chunk_size=case.chunk_size,
    )
    # Ground truth in fp32 on the same (possibly bf16-rounded) values
    want = _loss_and_grads(
        naive_dft_loss,
        hidden.float(),
        weight.float(),
        labels,
        ignore_index=case.ignore_index,
        loss_type=case.loss_type,
    )
    assert got[0].dtype == torch.float32
    assert got[1].dtype == got[2].dtype == case.dtype
    rtol = 1e-5 if case.dtype == torch.float32 else 1e-2  # bf16: only the returned gradients are rounded
    for name, g, w in zip(("loss", "grad_hidden", "grad_weight"), got, want, strict=True):
        g = g.float()
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, w, rtol=rtol, atol=rtol * float(w.abs().max()) + 1e-12, msg=name)
    if len(case.ignored) == T:
        assert got[0].item() == 0.0 and not got[1].any() and not got[2].any()
    else:
        assert got[1].abs().max() > 0 and got[2].abs().max() > 0  # not trivially zero
        assert not got[1].reshape(T, H)[list(case.ignored)].any()  # ignored tokens get no gradient


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fused_matches_reference(case: Case) -> None:
    _check(fused_linear_dft_loss, case)


def test_dft_differs_from_ce() -> None:
    hidden, weight, labels = _inputs(Case())
    dft = fused_linear_dft_loss(hidden, weight, labels, loss_type="dft")
    ce = fused_linear_dft_loss(hidden, weight, labels, loss_type="ce")
    assert 0 < dft.item() < ce.item()


def test_backward_scales_by_grad_output() -> None:
    hidden, weight, labels = _inputs(Case())
    _, gh, gw = _loss_and_grads(lambda *a, **k: 2.5 * fused_linear_dft_loss(*a, **k), hidden, weight, labels)
    _, rh, rw = _loss_and_grads(lambda *a, **k: 2.5 * naive_dft_loss(*a, **k), hidden, weight, labels)
    torch.testing.assert_close(gh, rh, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gw, rw, rtol=1e-5, atol=1e-7)


def test_frozen_weight_gets_no_gradient() -> None:
    hidden, weight, labels = _inputs(Case())
    hidden.requires_grad_()
    fused_linear_dft_loss(hidden, weight, labels).backward()
    assert hidden.grad is not None and weight.grad is None


def test_rejects_bad_arguments() -> None:
    hidden, weight, labels = _inputs(Case())
    with pytest.raises(ValueError):
        fused_linear_dft_loss(hidden, weight, labels, loss_type="nll")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fused_linear_dft_loss(hidden, weight, labels[:-1])


@pytest.mark.skipif(not INTERPRET, reason="run by test_triton_interpreter with TRITON_INTERPRET=1")
@pytest.mark.parametrize("case", CASES, ids=str)
def test_triton_matches_reference(case: Case) -> None:
    from medprog.kernels.dft_loss_triton import triton_fused_linear_dft_loss

    # A vocabulary tile of 32 does not divide V = 100: the kernel's masked last tile is exercised
    _check(functools.partial(triton_fused_linear_dft_loss, block_size=32), case)


@pytest.mark.skipif(INTERPRET or not HAS_TRITON, reason="needs triton; runs the interpreter in a subprocess")
def test_triton_interpreter() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "test_triton_matches"],
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"{len(CASES)} passed" in output and "skipped" not in output, output
