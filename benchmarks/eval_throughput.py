"""Evaluation throughput against a real vLLM server: 200 examples at concurrency 1 and 8, one run.

    .venv/bin/python benchmarks/eval_throughput.py            # builds a tiny model, starts vLLM from .vllm-venv
    .venv/bin/python benchmarks/eval_throughput.py --url http://127.0.0.1:8000/v1 --model NAME

Each example is one constrained call of a JSON-output signature through `dspy.Evaluate`
(`num_threads` = concurrency) with `MedprogAdapter` and the `openai:` engine (cache off).
Prints both rates and their ratio (target: >= 3x). Needs `bash scripts/setup_vllm.sh` first.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from contextlib import nullcontext
from typing import Literal

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from medprog.engines.constraints import output_text  # noqa: E402
from medprog.engines.server import ServerEngine  # noqa: E402
from medprog.engines.vllm_server import build_served_test_model, start_vllm_server  # noqa: E402
from medprog.signatures.adapter import MedprogAdapter, format_messages  # noqa: E402
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


def run(url: str, model: str, examples: list[dspy.Example], concurrency: int) -> dict:
    engine = ServerEngine(model, [url], cache=None, concurrency=concurrency)
    engine.check()
    program = dspy.Predict(Triage)
    with dspy.context(lm=engine.as_lm(max_tokens=128), adapter=MedprogAdapter()):
        evaluate = dspy.Evaluate(devset=examples, metric=metric, num_threads=concurrency, display_progress=False,
                                 max_errors=len(examples), provide_traceback=False)
        t0 = time.perf_counter()
        result = evaluate(program)
        wall = time.perf_counter() - t0
    usage = engine.ledger.total
    engine.close()
    return {"concurrency": concurrency, "examples": len(examples), "wall_s": round(wall, 2),
            "examples_per_s": round(len(examples) / wall, 2), "score": round(float(result.score), 1),
            "errors": usage.errors, "calls": usage.calls, "completion_tokens": usage.completion_tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--url", help="use a running server instead of starting one")
    ap.add_argument("--model", default="tiny-qwen2", help="served model name (with --url)")
    ap.add_argument("--model-dir", help="serve this model directory instead of building a tiny one")
    args = ap.parse_args()

    examples = make_examples(args.examples, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            server, model = nullcontext(args.url), args.model
        else:
            if args.model_dir:
                model_dir = args.model_dir
            else:
                t0 = time.perf_counter()
                train = make_examples(48, seed=1)
                pairs = [(format_messages(Triage, [], {"note": ex.note}), output_text(Triage, {"finding": ex.finding}))
                         for ex in train]
                model_dir = build_served_test_model(f"{tmp}/tiny-qwen2", pairs)
                print(f"built a tiny model in {time.perf_counter() - t0:.0f} s")
            t0 = time.perf_counter()
            server, model = start_vllm_server(model_dir, max_num_seqs=16), os.path.basename(str(model_dir))
        with server as url:
            if not args.url:
                print(f"vLLM server up in {time.perf_counter() - t0:.0f} s at {url}")
            run(url, model, make_examples(8, seed=2), max(args.concurrency))  # warm-up: grammar compiled, caches hot
            rows = [run(url, model, examples, c) for c in args.concurrency]
    print(f"\n{'concurrency':>11} {'examples':>8} {'wall s':>7} {'ex/s':>6} {'score':>6} {'errors':>6}")
    for r in rows:
        print(f"{r['concurrency']:>11} {r['examples']:>8} {r['wall_s']:>7} {r['examples_per_s']:>6} "
              f"{r['score']:>6} {r['errors']:>6}")
    ratio = rows[-1]["examples_per_s"] / rows[0]["examples_per_s"]
    print(f"\nspeed-up concurrency {rows[-1]['concurrency']} vs {rows[0]['concurrency']}: {ratio:.2f}x "
          f"(target >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
    print(json.dumps({"rows": rows, "ratio": round(ratio, 2)}))


if __name__ == "__main__":
    main()
