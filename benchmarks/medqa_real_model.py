"""MedQA multiple choice on a real pretrained model: one call, chain-of-thought, and mdagents' modes.

    python benchmarks/medqa_real_model.py --data ../shared/data/medqa/test.jsonl --lm local:smollm2 \
        --out runs/medqa-real --arms direct --n 200 --budget-s 900

Every arm answers the first ``--n`` questions of the file (the same questions for every arm) and
streams one JSON line per question to ``OUT/ARM.jsonl``; a rerun skips the questions already
there, so a long benchmark can be run in budgeted pieces (``--budget-s`` per invocation).
``--table`` prints what is on disk: accuracy with a 95% Wilson interval beside the uniform and
majority-letter baselines on the same questions, the predicted-letter distribution, calls,
prompt and completion tokens and wall time per question, and the share of free-text fields
that are degenerate (one character, an option letter, a copied option or a copied stretch of the
question: `medprog.metrics.content`).

Arms: ``direct`` (mcq, one constrained letter), ``cot`` (mcq -o cot=true), ``basic``,
``intermediate``, ``advanced``, ``adaptive`` (mdagents -o mode=...). Greedy decoding, no
request cache. ``--concurrency K`` answers K questions at once (a local engine gathers their
concurrent calls into one batch, as it does an agent program's own parallel calls); wall s/q is
then each question's own latency, and the run's throughput is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import dspy  # noqa: E402

from medprog.data.medqa import MCQItem, load_medqa  # noqa: E402
from medprog.engines.base import Completion, Engine, Messages, Sampling  # noqa: E402
from medprog.engines.constraints import JsonConstraint  # noqa: E402
from medprog.engines.spec import make_engine  # noqa: E402
from medprog.engines.threads import set_torch_threads  # noqa: E402
from medprog.metrics.content import degenerate_strings  # noqa: E402
from medprog.programs.registry import get_program  # noqa: E402
from medprog.signatures.adapter import MedprogAdapter  # noqa: E402

ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "direct": ("mcq", {"cot": False}),
    "cot": ("mcq", {"cot": True}),
    "basic": ("mdagents", {"mode": "basic"}),
    "intermediate": ("mdagents", {"mode": "intermediate"}),
    "advanced": ("mdagents", {"mode": "advanced"}),
    "adaptive": ("mdagents", {"mode": "adaptive"}),
}


class Recording(Engine):
    """Passes every call to ``inner`` and keeps the JSON outputs, to check their content.

    Outputs are kept per question: `record` opens a list in the calling context, which the calls
    made from it, and from the threads the program starts in a copy of it (`pmap`), append to.
    """

    name = "recording"

    def __init__(self, inner: Engine) -> None:
        super().__init__()
        self.inner = inner
        self._sink: ContextVar[list[tuple[dict[str, Any], str]] | None] = ContextVar("sink", default=None)

    def record(self) -> list[tuple[dict[str, Any], str]]:
        sink: list[tuple[dict[str, Any], str]] = []
        self._sink.set(sink)
        return sink

    def _generate(self, prompts: list[Messages], constraints: list[Any], sampling: Sampling) -> list[Completion]:
        out = self.inner.generate(prompts, constraints, sampling)
        sink = self._sink.get()
        if sink is not None:
            sink += [(c.json_schema, r.text) for c, r in zip(constraints, out)
                     if isinstance(c, JsonConstraint) and r.error is None]
        return out


def content_check(outputs: list[tuple[dict[str, Any], str]], item: MCQItem) -> dict[str, Any]:
    n, bad = 0, []
    for schema, text in outputs:
        c = degenerate_strings(json.loads(text), schema, item.options, item.question)
        n += c.n_fields
        bad += c.degenerate
    return {"content_fields": n, "degenerate": len(bad), "degenerate_examples": bad[:5]}


def run_one(module: dspy.Module, engine: Recording, item: MCQItem) -> dict[str, Any]:
    outputs = engine.record()
    t0 = time.perf_counter()
    row: dict[str, Any] = {"id": item.id, "gold": item.answer, "n_options": len(item.options)}
    try:
        pred = module(question=item.question, options=item.options)
        row.update(answer=pred.answer, mode=pred.get("mode"), usage=pred.get("usage") or {},
                   reasoning=(pred.get("reasoning") or "")[:300])
    except Exception as e:  # a failed question is recorded (and counted wrong), never fatal
        row.update(answer=None, error=f"{type(e).__name__}: {e}"[:300], usage={})
    row.update(correct=row["answer"] == item.answer, wall_s=round(time.perf_counter() - t0, 3),
               **content_check(outputs, item))
    return row


def done_ids(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()}


def run_arm(arm: str, items: list[MCQItem], engine: Recording, out: Path, deadline: float,
            max_tokens: int, concurrency: int = 1) -> int:
    """Answer the questions of ``items`` not yet in ``OUT/ARM.jsonl``, appending each row as it is done."""
    name, settings = ARMS[arm]
    info = get_program(name)
    module = info.build(**{**info.defaults, **settings})
    path = out / f"{arm}.jsonl"
    seen = done_ids(path)
    todo = [i for i in items if i.id not in seen]
    lock, ran = threading.Lock(), 0
    lm = engine.as_lm(temperature=0.0, max_tokens=max_tokens)
    t0 = time.perf_counter()

    def answer(item: MCQItem) -> None:
        nonlocal ran
        if time.monotonic() > deadline:
            return
        with dspy.context(lm=lm, adapter=MedprogAdapter()):
            row = run_one(module, engine, item)
        with lock:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            ran += 1
            print(f"{arm} {len(seen) + ran}/{len(items)} id={item.id} answer={row['answer']} gold={row['gold']} "
                  f"{row['wall_s']:.1f}s degenerate {row['degenerate']}/{row['content_fields']}", file=sys.stderr)

    with path.open("a", encoding="utf-8") as f, ThreadPoolExecutor(max(1, concurrency)) as pool:
        list(pool.map(answer, todo))
    if ran:
        print(f"{arm}: {ran} questions in {time.perf_counter() - t0:.0f} s at concurrency {concurrency} "
              f"({(time.perf_counter() - t0) / ran:.1f} s per question)", file=sys.stderr)
    return ran


# ------------------------------------------------------------------------------ the table

def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def arm_row(arm: str, rows: list[dict[str, Any]]) -> list[str]:
    n = len(rows)
    k = sum(r["correct"] for r in rows)
    lo, hi = wilson(k, n)
    golds = Counter(r["gold"] for r in rows)
    letter, count = golds.most_common(1)[0]
    uniform = sum(1 / r["n_options"] for r in rows) / n
    preds = Counter(r["answer"] or "none" for r in rows)
    dist = " ".join(f"{a}:{c}" for a, c in sorted(preds.items()))

    def mean(key: str) -> float:
        return sum(float((r.get("usage") or {}).get(key, 0)) for r in rows) / n

    fields = sum(r["content_fields"] for r in rows)
    degenerate = f"{sum(r['degenerate'] for r in rows) / fields:.1%} of {fields}" if fields else "–"
    return [arm, str(n), f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]", f"{uniform:.3f}", f"{count / n:.3f} ({letter})", dist,
            f"{mean('calls'):.1f}", f"{mean('prompt_tokens'):.0f}", f"{mean('completion_tokens'):.0f}",
            f"{sum(r['wall_s'] for r in rows) / n:.1f}", str(sum(bool(r.get("error")) for r in rows)), degenerate]


def table(out: Path, arms: list[str]) -> str:
    head = ["arm", "n", "accuracy [95% CI]", "uniform", "majority letter", "predicted letters (count)", "calls/q",
            "prompt tok/q", "completion tok/q", "wall s/q", "errors", "degenerate fields"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in arms:
        path = out / f"{arm}.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
        if rows:
            lines.append("| " + " | ".join(arm_row(arm, rows)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/medqa/test.jsonl"))
    ap.add_argument("--lm", default="local:smollm2")
    ap.add_argument("--out", type=Path, default=Path("runs/medqa-real"))
    ap.add_argument("--arms", default="direct", help=f"comma-separated, from {', '.join(ARMS)}")
    ap.add_argument("--n", type=int, default=200, help="the first N questions of --data")
    ap.add_argument("--budget-s", type=float, default=900.0, help="stop starting questions after this long")
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (local engines)")
    ap.add_argument("--concurrency", type=int, default=1, help="questions answered at once")
    ap.add_argument("--table", action="store_true", help="only print the table of what is on disk")
    args = ap.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    if not args.table:
        items = load_medqa(args.data)[: args.n]
        if args.lm.startswith("local:"):
            set_torch_threads(args.threads)  # the caller sets threads; engines never do
        engine = Recording(make_engine(args.lm, cache_dir=False))
        args.out.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + args.budget_s
        for arm in arms:
            run_arm(arm, items, engine, args.out, deadline, args.max_tokens, args.concurrency)
        engine.inner.close()
    print(f"{args.lm} on {args.data} (first {args.n} questions), {args.out}")
    print(table(args.out, arms))


if __name__ == "__main__":
    main()
