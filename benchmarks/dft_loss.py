"""Peak memory and time of one forward+backward of the DFT loss: ours against the baselines.

    python benchmarks/dft_loss.py                   # CPU, fp32, T=4096 H=1024 V=151936
    python benchmarks/dft_loss.py --device cuda     # bf16, T=8192 H=4096 V=151936
    python benchmarks/dft_loss.py --quick           # a small size, for a smoke run

Variants (all on the same inputs: hidden (T, H) and LM head (V, H) requiring grad, every label valid):

* ``naive``      -- ``medprog.kernels.dft_loss_reference.naive_dft_loss``: full logits, log_softmax, autograd.
* ``trl``        -- TRL's own ``SFTTrainer(loss_type="dft")`` path. TRL 1.16 has no separate DFT function on logits:
                    the trainer runs a fused LM head (``trl.kernels.ChunkedLogProbFunction``, vocab tiles, logits
                    recomputed in the backward) for per-token log-probs, then weights them by their detached
                    probability. Replayed here as ``add_fused_lm_head`` + ``SFTTrainer.compute_loss`` do it, asking
                    only for the log-probs (the trainer also asks entropy and top-1 for its metrics).
* ``trl-logits`` -- the same DFT weighting on full logits, ``logits = hidden @ W.T`` (one sequence of T tokens) fed
                    to TRL's ``selective_log_softmax``: the trainer's DFT formula without the fused head.
* ``liger``      -- CUDA only, if ``liger_kernel`` imports: its fused linear cross entropy with
                    ``use_token_scaling=True`` (which is DFT).
* ``ours``       -- ``medprog.kernels.dft_loss.fused_linear_dft_loss`` (the Triton kernel on CUDA).

Method. Each variant runs in a fresh subprocess, so no variant inherits another's allocator state or cached memory.
The child imports what it needs, runs a small warm-up (CUDA: the full H and V at T=256, to compile the kernels), then
allocates the inputs. Peak memory is the extra memory above that point during one forward+backward:

* CPU: the kernel's resident-set high-water mark. The child resets it (``echo 5 > /proc/self/clear_refs``), reads
  ``VmRSS`` before the run and ``VmHWM`` after it; the peak is ``VmHWM - VmRSS``. Where the reset is not allowed, it
  falls back to ``ru_maxrss`` after the run minus ``ru_maxrss`` before it (an undercount if imports peaked higher).
* CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus ``memory_allocated()``.

Both include the gradients written to ``.grad`` (the same for every variant). Time is the wall time of that one run
(CUDA: synchronized) and, on CPU, its process CPU time (all threads), which a shared machine disturbs less. Ratios:
each row against ``naive`` and against ``trl``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _trl_fused(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """TRL 1.16's SFTTrainer DFT loss: ``add_fused_lm_head``'s forward, then ``compute_loss``'s DFT lines."""
    from trl.kernels import ChunkedLogProbFunction
    from trl.kernels.chunked_logprob import _use_triton
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    mask = labels != -100
    compact = _use_triton(hidden.device)
    log_probs = ChunkedLogProbFunction.apply(
        hidden[mask] if compact else hidden,
        weight,
        None,
        labels[mask] if compact else labels.clamp(min=0),
        1.0,
        _CHUNKED_LOGPROB_CHUNK_SIZE,
        None,
        1.0,
        ("log_probs",),
    )[0]
    if compact:
        log_probs = log_probs.new_zeros(mask.shape).masked_scatter(mask, log_probs)
    else:
        log_probs = log_probs.masked_fill(~mask, 0)
    per_token_loss = -log_probs * log_probs.exp().detach()
    return per_token_loss.sum() / mask.sum().clamp(min=1)


def _trl_logits(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The trainer's DFT weighting on full (1, T, V) logits through TRL's ``selective_log_softmax``."""
    from trl.trainer.utils import selective_log_softmax

    logits = (hidden @ weight.T).unsqueeze(0)
    mask = (labels != -100).unsqueeze(0)
    log_probs = selective_log_softmax(logits, labels.clamp(min=0).unsqueeze(0)).masked_fill(~mask, 0)
    per_token_loss = -log_probs * log_probs.exp().detach()
    return per_token_loss.sum() / mask.sum().clamp(min=1)


def _liger(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    out = LigerFusedLinearCrossEntropyLoss(use_token_scaling=True)(weight, hidden, labels)
    if isinstance(out, torch.Tensor):
        return out
    return out[0] if isinstance(out, tuple) else out.loss


def _naive(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    from medprog.kernels.dft_loss_reference import naive_dft_loss

    return naive_dft_loss(hidden, weight, labels)


def _ours(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    from medprog.kernels.dft_loss import fused_linear_dft_loss

    return fused_linear_dft_loss(hidden, weight, labels)


VARIANTS: dict[str, LossFn] = {
    "naive": _naive,
    "trl": _trl_fused,
    "trl-logits": _trl_logits,
    "liger": _liger,
    "ours": _ours,
}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _inputs(T: int, H: int, V: int, dtype: torch.dtype, device: str, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)
    hidden = (torch.randn(T, H, generator=gen, device=device) * H**-0.5).to(dtype).requires_grad_()
    weight = torch.randn(V, H, generator=gen, device=device).to(dtype).requires_grad_()
    labels = torch.randint(0, V, (T,), generator=gen, device=device)
    return hidden, weight, labels


def run_child(variant: str, T: int, H: int, V: int, dtype: torch.dtype, device: str) -> dict[str, float]:
    """One variant, one forward+backward: peak MiB above the inputs, wall and CPU seconds, and the loss."""
    fn = VARIANTS[variant]
    warm_T, warm_H, warm_V = (min(T, 256), H, V) if device == "cuda" else (8, 16, 64)
    fn(*_inputs(warm_T, warm_H, warm_V, dtype, device)).backward()
    hidden, weight, labels = _inputs(T, H, V, dtype, device)

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            base, method = _status_kib("VmRSS"), "VmHWM"
        except OSError:
            base, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"

    start, cpu_start = time.perf_counter(), time.process_time()
    loss = fn(hidden, weight, labels)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    if device == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        high = _status_kib("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mib = (high - base) / 1024
    return {"peak_mib": peak_mib, "seconds": seconds, "cpu_seconds": cpu_seconds, "loss": loss.item()}


def _available(variant: str, device: str) -> bool:
    if variant == "liger":
        if device != "cuda":
            return False
        try:
            import liger_kernel  # noqa: F401
        except ImportError:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--T", type=int)
    parser.add_argument("--H", type=int)
    parser.add_argument("--V", type=int)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--quick", action="store_true", help="small size: T=512 H=256 V=16384")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    cuda = args.device == "cuda"
    T, H, V = (512, 256, 16384) if args.quick else ((8192, 4096, 151936) if cuda else (4096, 1024, 151936))
    T, H, V = args.T or T, args.H or H, args.V or V
    dtype_name = args.dtype or ("bfloat16" if cuda else "float32")
    dtype = getattr(torch, dtype_name)

    if args.child:
        torch.manual_seed(0)
        print(json.dumps(run_child(args.child, T, H, V, dtype, args.device)))
        return

    variants = [v for v in args.variants.split(",") if _available(v, args.device)]
    print(
        f"DFT loss, forward+backward, {args.device} {dtype_name}, T={T} H={H} V={V}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    results: dict[str, dict[str, float]] = {}
    for variant in variants:
        cmd = [sys.executable, __file__, "--child", variant, "--device", args.device, "--dtype", dtype_name]
        cmd += ["--T", str(T), "--H", str(H), "--V", str(V)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            print(f"{variant}: failed\n{proc.stderr[-2000:]}")
            continue
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])

    def ratio(variant: str, ref: str, key: str) -> str:
        if ref not in results:
            return "-"
        return f"{results[variant][key] / results[ref][key]:.3f}"

    # On CPU, also the process CPU time: on a shared machine it is steadier than the wall time
    keys = ["peak_mib", "seconds"] + ([] if cuda else ["cpu_seconds"])
    names = {"peak_mib": "mem", "seconds": "time", "cpu_seconds": "cpu"}
    header = f"{'variant':<11} {'peak MiB':>9} {'time s':>8} " + ("" if cuda else f"{'cpu s':>8} ") + f"{'loss':>11}"
    widths = {(ref, k): len(names[k]) + len(ref) + 2 for ref in ("naive", "trl") for k in keys}
    header += "".join(f" {names[k] + '/' + ref:>{w}}" for (ref, k), w in widths.items())
    print(header)
    print("-" * len(header))
    for variant, r in results.items():
        row = f"{variant:<11} {r['peak_mib']:>9.1f} {r['seconds']:>8.2f} "
        row += ("" if cuda else f"{r['cpu_seconds']:>8.2f} ") + f"{r['loss']:>11.5g}"
        row += "".join(f" {ratio(variant, ref, k):>{w}}" for (ref, k), w in widths.items())
        print(row)

if __name__ == "__main__":
    main()
