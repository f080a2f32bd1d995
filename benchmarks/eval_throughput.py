"""Evaluation throughput on SmolLM2: in-process `local:smollm2` vs a vLLM server serving it.

    .venv/bin/python benchmarks/eval_throughput.py                 # both backends, concurrency 1 and 8
    .venv/bin/python benchmarks/eval_throughput.py --backends server --url http://127.0.0.1:8000/v1

Each example is one constrained call of a JSON-output signature (`Triage`: a severity
choice, a flag and a short keyword) through `dspy.Evaluate` (``num_threads`` =
concurrency) with `MedprogAdapter`, request cache off. The local engine batches concurrent
callers itself; the server engine sends them as concurrent requests that vLLM batches.
Prints examples/s per backend and concurrency, and each backend's speed-up from 1 to the
highest concurrency. The local engine runs ``--threads`` torch threads (default 1). The server
comes from ``.vllm-venv`` (``bash scripts/setup_vllm.sh``) and the model from
``medprog models prepare smollm2``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from contextlib import nullcontext
from typing import Literal

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from medprog.engines.base import Engine  # noqa: E402
from medprog.engines.spec import make_engine  # noqa: E402
from medprog.engines.threads import set_torch_threads  # noqa: E402
from medprog.engines.vllm_server import start_vllm_server  # noqa: E402
from medprog.signatures.adapter import MedprogAdapter  # noqa: E402
from medprog.signatures.base import Signature  # noqa: E402

DRUGS = ["aspirin", "metformin", "lisinopril", "heparin", "insulin", "warfarin"]
PROBLEMS = ["chest pain", "fever", "cough", "shortness of breath", "hypertension", "diabetes"]


class Finding(BaseModel):
    severity: Literal["mild", "moderate", "severe"]
    urgent: bool
    keyword: str = Field(max_length=20)


class Triage(Signature):
    """Read the clinical note and report its main finding."""

    note: str = dspy.InputField()
    finding: Finding = dspy.OutputField()


def make_examples(n: int, seed: int) -> list[dspy.Example]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        drug, problem = rng.choice(DRUGS), rng.choice(PROBLEMS)
        note = (f"Patient was started on {drug} {rng.choice([5, 10, 20, 81, 500])} mg daily for {problem}. "
                f"Will follow up in {rng.randint(1, 6)} weeks.")
        sev = rng.choice(["mild", "moderate", "severe"])
        out.append(dspy.Example(note=note, finding=Finding(severity=sev, urgent=sev == "severe", keyword=drug))
                   .with_inputs("note"))
    return out


def metric(gold: dspy.Example, pred: dspy.Prediction, trace=None) -> float:
    return float(pred.finding.severity == gold.finding.severity)


class Row(BaseModel):
    backend: str
    concurrency: int
    examples: int
    wall_s: float
    examples_per_s: float
    score: float
    errors: int
    calls: int
    completion_tokens: int


def run(engine: Engine, backend: str, examples: list[dspy.Example], concurrency: int, max_tokens: int) -> Row:
    """``examples`` through `dspy.Evaluate` at ``concurrency``; usage is this run's share of the ledger."""
    before = engine.ledger.total
    with dspy.context(lm=engine.as_lm(max_tokens=max_tokens), adapter=MedprogAdapter()):
        evaluate = dspy.Evaluate(devset=examples, metric=metric, num_threads=concurrency, display_progress=False,
                                 max_errors=len(examples), provide_traceback=False)
        t0 = time.perf_counter()
        result = evaluate(dspy.Predict(Triage))
        wall = time.perf_counter() - t0
    after = engine.ledger.total
    return Row(backend=backend, concurrency=concurrency, examples=len(examples), wall_s=round(wall, 1),
               examples_per_s=round(len(examples) / wall, 3), score=round(float(result.score), 1),
               errors=after.errors - before.errors, calls=after.calls - before.calls,
               completion_tokens=after.completion_tokens - before.completion_tokens)


def bench(engine: Engine, backend: str, args: argparse.Namespace) -> list[Row]:
    """A warm-up (constraint compiled, caches hot), then one run per concurrency."""
    examples = make_examples(args.examples, seed=0)
    run(engine, backend, make_examples(max(args.concurrency), seed=2), max(args.concurrency), args.max_tokens)
    rows = [run(engine, backend, examples, c, args.max_tokens) for c in args.concurrency]
    for r in rows:
        print(r.model_dump_json(), flush=True)
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"\n{'backend':<8} {'concurrency':>11} {'examples':>8} {'wall s':>7} {'ex/s':>6} {'score':>6} "
          f"{'errors':>6} {'compl tok':>9}")
    for r in rows:
        print(f"{r.backend:<8} {r.concurrency:>11} {r.examples:>8} {r.wall_s:>7} {r.examples_per_s:>6.2f} "
              f"{r.score:>6} {r.errors:>6} {r.completion_tokens:>9}")
    for backend in dict.fromkeys(r.backend for r in rows):
        mine = [r for r in rows if r.backend == backend]
        if len(mine) > 1:
            print(f"{backend}: concurrency {mine[-1].concurrency} vs {mine[0].concurrency}: "
                  f"{mine[-1].examples_per_s / mine[0].examples_per_s:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=24)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--backends", nargs="+", default=["local", "server"], choices=["local", "server"])
    ap.add_argument("--model", default="smollm2", help="embedded model name or model directory (local and served)")
    ap.add_argument("--url", help="use a running server (serving --served-name) instead of starting one")
    ap.add_argument("--served-name", default="smollm2")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the local engine (1: on a shared CPU, 2 threads ran 20x slower here)")
    ap.add_argument("--out", help="also write the rows as JSON here")
    args = ap.parse_args()

    rows: list[Row] = []
    if "local" in args.backends:
        t0 = time.perf_counter()
        set_torch_threads(args.threads)
        engine = make_engine(f"local:{args.model}", cache_dir=False)
        print(f"local engine loaded in {time.perf_counter() - t0:.0f} s", flush=True)
        rows += bench(engine, "local", args)
        engine.close()
    if "server" in args.backends:
        t0 = time.perf_counter()
        server = nullcontext(args.url) if args.url else start_vllm_server(
            args.model, served_model_name=args.served_name, max_num_seqs=16)
        with server as url:
            print(f"vLLM server up in {time.perf_counter() - t0:.0f} s at {url}", flush=True)
            engine = make_engine(f"openai:{args.served_name}@{url}", cache_dir=False,
                                 concurrency=max(args.concurrency))
            rows += bench(engine, "server", args)
            engine.close()
    print_table(rows)
    if args.out:
        with open(args.out, "w") as f:
            json.dump([r.model_dump() for r in rows], f, indent=1)


if __name__ == "__main__":
    main()
