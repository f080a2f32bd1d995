"""Plain DSPy vs medprog on the same vLLM server serving SmolLM2-135M-Instruct.

    .venv/bin/python benchmarks/vs_dspy.py                     # starts vLLM (from .vllm-venv) on the embedded smollm2
    .venv/bin/python benchmarks/vs_dspy.py --url http://127.0.0.1:8000/v1 --model smollm2 --n 20

Two signatures, the same classes for every method, on the first ``--n`` questions of a
MedQA-style jsonl (read at run time; default ``../shared/data/medqa/test.jsonl``):

- ``choice``: the option letter alone (`AnswerQuestion`, a ``Literal`` narrowed to the
  question's letters);
- ``json``: MDAgents' `ExpertAnswer` (reasoning, then the letter), a structured output.

Each goes through plain DSPy (``dspy.LM("openai/MODEL", api_base=URL)`` with `ChatAdapter`,
then `JSONAdapter`) and through medprog (``openai:MODEL@URL`` with `MedprogAdapter`), greedy,
with the same token limit and the same number of questions in flight. Printed per row:
exceptions raised by the call, valid outputs (a typed value whose letter is one of the
question's options), accuracy, LM calls, prompt and completion tokens, wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from medprog.data.medqa import MCQItem, load_medqa  # noqa: E402
from medprog.engines.spec import make_engine  # noqa: E402
from medprog.engines.vllm_server import start_vllm_server  # noqa: E402
from medprog.programs.multiagent import with_choices  # noqa: E402
from medprog.signatures.adapter import MedprogAdapter  # noqa: E402
from medprog.signatures.base import Signature  # noqa: E402
from medprog.signatures.mcq import ExpertAnswer, Letter  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medqa" / "test.jsonl"
METHODS = ("dspy-chat", "dspy-json", "medprog")


class AnswerQuestion(Signature):
    """Answer the medical question with the letter of the correct option."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    answer: Letter = dspy.OutputField()


class Task(BaseModel):
    """One signature of the comparison and how it is called."""

    name: str
    max_tokens: int

    def signature(self, item: MCQItem) -> type[dspy.Signature]:
        base = AnswerQuestion if self.name == "choice" else ExpertAnswer
        return with_choices(base, "answer", list(item.options))

    def inputs(self, item: MCQItem) -> dict[str, Any]:
        x: dict[str, Any] = {"question": item.question, "options": item.options}
        if self.name == "json":
            x.update(role="General physician", discussion="")
        return x

    def valid(self, pred: dspy.Prediction, item: MCQItem) -> bool:
        if pred.get("answer") not in item.options:
            return False
        return self.name == "choice" or (isinstance(pred.get("reasoning"), str) and bool(pred.reasoning.strip()))


TASKS = (Task(name="choice", max_tokens=256), Task(name="json", max_tokens=512))


class Row(BaseModel):
    """What one method did on one signature."""

    task: str
    method: str
    questions: int
    exceptions: int = 0
    valid: int = 0
    correct: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    letters: dict[str, int] = {}
    """How often each letter was answered (position bias)."""
    first_error: str = ""


def _lm_and_usage(method: str, url: str, model: str, max_tokens: int) -> tuple[dspy.BaseLM, dspy.Adapter, Callable]:
    """The LM, the adapter, and a function returning (calls, prompt tokens, completion tokens) so far."""
    if method == "medprog":
        engine = make_engine(f"openai:{model}@{url}", cache_dir=False, concurrency=16)
        engine.check()

        def medprog_usage() -> tuple[int, int, int]:
            t = engine.ledger.total
            return t.calls, t.prompt_tokens, t.completion_tokens

        return engine.as_lm(max_tokens=max_tokens, temperature=0.0), MedprogAdapter(), medprog_usage
    lm = dspy.LM(f"openai/{model}", api_base=url, api_key="unused", temperature=0.0, max_tokens=max_tokens,
                 cache=False, num_retries=0)
    adapter = dspy.ChatAdapter() if method == "dspy-chat" else dspy.JSONAdapter()

    def dspy_usage() -> tuple[int, int, int]:
        usage = [h.get("usage") or {} for h in lm.history]
        return (len(lm.history), sum(int(u.get("prompt_tokens") or 0) for u in usage),
                sum(int(u.get("completion_tokens") or 0) for u in usage))

    return lm, adapter, dspy_usage


def run_method(task: Task, method: str, items: list[MCQItem], url: str, model: str, concurrency: int) -> Row:
    """All ``items`` through one method, ``concurrency`` questions in flight."""
    lm, adapter, usage = _lm_and_usage(method, url, model, task.max_tokens)
    row = Row(task=task.name, method=method, questions=len(items))

    def one(item: MCQItem) -> tuple[dspy.Prediction | None, str]:
        with dspy.context(lm=lm, adapter=adapter):
            try:
                return dspy.Predict(task.signature(item))(**task.inputs(item)), ""
            except Exception as e:  # what a user of plain dspy would see: the call raises
                return None, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, items))
    row.wall_s = round(time.perf_counter() - t0, 1)
    for item, (pred, err) in zip(items, results):
        if pred is None:
            row.exceptions += 1
            row.first_error = row.first_error or err
        elif task.valid(pred, item):
            row.valid += 1
            row.correct += int(pred.answer == item.answer)
            row.letters[pred.answer] = row.letters.get(pred.answer, 0) + 1
    row.calls, row.prompt_tokens, row.completion_tokens = usage()
    return row


def dspy_json_mode(url: str, model: str) -> str:
    """What plain DSPy's JSONAdapter asks the server for, as litellm sees this model."""
    lm = dspy.LM(f"openai/{model}", api_base=url, api_key="unused")
    if "response_format" not in lm.supported_params:
        return "no response_format (litellm lists none for this model): the JSON is not constrained"
    return "a JSON schema response_format" if lm.supports_response_schema else "response_format json_object"


def print_table(rows: list[Row]) -> None:
    head = (f"{'signature':<9} {'method':<10} {'questions':>9} {'exceptions':>10} {'valid':>5} {'accuracy':>8} "
            f"{'calls':>5} {'prompt tok':>10} {'compl tok':>9} {'wall s':>7}  letters")
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        acc = f"{r.correct / r.questions:.2f}" if r.questions else "-"
        print(f"{r.task:<9} {r.method:<10} {r.questions:>9} {r.exceptions:>10} {r.valid:>5} {acc:>8} {r.calls:>5} "
              f"{r.prompt_tokens:>10} {r.completion_tokens:>9} {r.wall_s:>7}  "
              + " ".join(f"{k}{v}" for k, v in sorted(r.letters.items())))
    for r in rows:
        if r.first_error:
            print(f"first exception, {r.task} / {r.method}: {r.first_error}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="MedQA-style jsonl (default: %(default)s)")
    ap.add_argument("--n", type=int, default=20, help="first N questions")
    ap.add_argument("--concurrency", type=int, default=4, help="questions in flight, the same for every method")
    ap.add_argument("--tasks", nargs="+", default=[t.name for t in TASKS], choices=[t.name for t in TASKS])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--url", help="use a running server (its model name via --model) instead of starting one")
    ap.add_argument("--model", default="smollm2", help="served model name")
    ap.add_argument("--model-dir", help="model directory to serve (default: the embedded smollm2)")
    ap.add_argument("--out", help="also write the rows as JSON here")
    args = ap.parse_args()

    items = load_medqa(args.data)[: args.n]
    tasks = [t for t in TASKS if t.name in args.tasks]
    if args.url:
        server = nullcontext(args.url)
    else:
        t0 = time.perf_counter()
        server = start_vllm_server(args.model_dir or "smollm2", served_model_name=args.model, max_model_len=2048)
    with server as url:
        if not args.url:
            print(f"vLLM server up in {time.perf_counter() - t0:.0f} s at {url}", flush=True)
        rows = []
        for task in tasks:
            for method in args.methods:
                rows.append(run_method(task, method, items, url, args.model, args.concurrency))
                print(rows[-1].model_dump_json(), flush=True)
    print_table(rows)
    if "dspy-json" in args.methods:
        print(f"plain DSPy JSONAdapter sends: {dspy_json_mode(url, args.model)}")
    if args.out:
        Path(args.out).write_text(json.dumps([r.model_dump() for r in rows], indent=1))


if __name__ == "__main__":
    main()
