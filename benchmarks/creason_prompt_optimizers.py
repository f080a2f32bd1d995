"""Prompt optimizers on the real model: `bootstrap` and `mipro` on creason (cot=false), against GRPO's baseline.

    python benchmarks/creason_prompt_optimizers.py --data runs/creason-grpo --out runs/prompt-opt

The program, dev tasks and base evaluation are those of `benchmarks/creason_grpo.py` (its ``--out``,
given here as ``--data``): creason with ``cot=false`` (the letter alone under a choice constraint over
the task's own letters), the outcome question "Did the patient die in hospital?" on the dev patients,
and its ``base`` eval of the untouched model. So GRPO, bootstrap and mipro are read against one
baseline. Stages, each skipped when its output exists (an interrupted run resumes):

1. ``base``: before the first eval, when ``DATA/dev.jsonl`` or ``DATA/base`` is missing,
   `creason_grpo.py --out DATA --stages data,base` (its defaults).
2. ``split``: ``--train-n`` and ``--val-n`` tasks drawn (seeded) from ``DATA/train.jsonl`` into
   ``OUT/train.jsonl`` and ``OUT/val.jsonl``: the optimizers never see a dev patient. ``val`` is
   mipro's validation set (it scores its trials there) and what each compile's report scores
   (its first ``--report-limit`` tasks only; the dev figures come from ``medprog eval``).
3. per arm, ``compile``: `medprog compile creason --optimizer ARM --lm local:MODEL -o settings={"cot": false}`
   with ``--demos`` demos at most (bootstrapped from the model's own correct answers, topped up
   with gold examples); mipro also proposes ``--mipro-candidates`` instructions (index 0 is the
   original) with the same model (no ``--teacher``: the prompt model is the student) and runs
   ``--mipro-trials`` Bayesian-optimisation trials on val.
4. ``eval``: `medprog eval ARTIFACT` on ``DATA/dev.jsonl`` (greedy, the same flags as the base eval).
5. ``compare``: `medprog compare DATA/base OUT/ARM/eval --json` (paired bootstrap CI of the difference).

Then a table: dev accuracy [95% Wilson], the difference from the base with its paired bootstrap
95% CI, predicted letters and options, prompt tokens per call (demos make prompts longer), the
demos and instruction the artifact carries, compile calls and wall time, eval wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from creason_grpo import medprog, predictions, wilson  # noqa: E402  (the sibling benchmark: same CLI runner)

from medprog.data.patient_registry import load_tasks  # noqa: E402

ARMS = ("bootstrap", "mipro")
STAGES = ("compile", "eval", "compare")


def ensure_base(a: argparse.Namespace) -> None:
    """The dev tasks and the base eval of creason_grpo.py (run with its defaults when missing)."""
    if (a.data / "dev.jsonl").is_file() and (a.data / "base" / "metrics.json").is_file():
        return
    cmd = [sys.executable, str(Path(__file__).with_name("creason_grpo.py")), "--out", str(a.data),
           "--stages", "data,base", "--model", a.model, "--threads", str(a.threads),
           "--concurrency", str(a.concurrency)]
    print("$ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        sys.exit("creason_grpo.py --stages data,base failed")


def make_split(a: argparse.Namespace) -> None:
    """Seeded train and val draws from the GRPO training tasks (never from dev)."""
    lines = [x for x in (a.data / "train.jsonl").read_text().splitlines() if x.strip()]
    if len(lines) < a.train_n + a.val_n:
        sys.exit(f"{a.data / 'train.jsonl'} has {len(lines)} tasks; --train-n + --val-n asks for more")
    random.Random(a.seed).shuffle(lines)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "train.jsonl").write_text("\n".join(lines[: a.train_n]) + "\n")
    (a.out / "val.jsonl").write_text("\n".join(lines[a.train_n: a.train_n + a.val_n]) + "\n")


def compile_args(arm: str, a: argparse.Namespace) -> list[str]:
    """The `medprog compile` command line of one arm."""
    opts: dict[str, Any] = {"settings": json.dumps({"cot": False}), "max_bootstrapped_demos": a.demos,
                            "max_labeled_demos": a.demos, "dev_limit": a.report_limit}
    if arm == "mipro":
        opts.update(num_candidates=a.mipro_candidates, num_trials=a.mipro_trials,
                    view_data_batch_size=a.view_data_batch_size, prompt_max_tokens=a.prompt_max_tokens)
    return ["compile", "creason", "--optimizer", arm, "--lm", f"local:{a.model}", "--train", str(a.out / "train.jsonl"),
            "--dev", str(a.out / "val.jsonl"), "--out", str(a.out / arm / "artifact"), "--seed", str(a.seed),
            "--threads", str(a.concurrency), "--torch-threads", str(a.threads), "--no-cache",
            *[x for k, v in opts.items() for x in ("-o", f"{k}={v}")]]


def run_stage(stage: str, arm: str, a: argparse.Namespace) -> None:
    d = a.out / arm
    if stage == "compile":
        medprog(compile_args(arm, a), a.threads)
    elif stage == "eval":
        medprog(["eval", str(d / "artifact"), "--data", str(a.data / "dev.jsonl"), "--out", str(d / "eval"),
                 "--torch-threads", str(a.threads), "--no-cache", "--no-progress", "--resume",
                 "-c", str(a.concurrency)], a.threads)
    elif stage == "compare":
        (d / "compare.json").write_text(medprog(["compare", str(a.data / "base"), str(d / "eval"), "--json"],
                                                a.threads))


def stage_output(stage: str, arm: str, out: Path) -> Path:
    return {"compile": out / arm / "artifact" / "program.json", "eval": out / arm / "eval" / "metrics.json",
            "compare": out / arm / "compare.json"}[stage]


def run_all(a: argparse.Namespace) -> None:
    """The asked stages of every arm; the base (creason_grpo.py) only once an eval needs it."""
    if not (a.out / "val.jsonl").is_file():
        make_split(a)
    walls_file = a.out / "stages.json"
    for arm in a.arms.split(","):
        if arm not in ARMS:
            sys.exit(f"unknown arm {arm!r}; expected {', '.join(ARMS)}")
        for stage in a.stages.split(","):
            if stage not in STAGES:
                sys.exit(f"unknown stage {stage!r}; expected {', '.join(STAGES)}")
            if stage_output(stage, arm, a.out).is_file():
                print(f"[{arm} {stage}] done already, skipped", flush=True)
                continue
            if stage != "compile":
                ensure_base(a)
            t0 = time.perf_counter()
            run_stage(stage, arm, a)
            walls = json.loads(walls_file.read_text()) if walls_file.is_file() else {}
            walls[f"{arm} {stage}"] = round(time.perf_counter() - t0, 1)
            walls_file.write_text(json.dumps(walls, indent=1))
            print(f"[{arm} {stage}] {walls[f'{arm} {stage}']} s", flush=True)


def count(c: Counter) -> str:
    return " ".join(f"{x}:{c[x]}" for x in sorted(c))


def eval_cells(run: Path, dev: dict[str, Any]) -> list[str]:
    """n, accuracy [Wilson], predicted letters, predicted options, prompt tokens per call, eval wall."""
    rows = predictions(run)
    answers = {i: (r.get("record") or {}).get("answer") for i, r in rows.items()}
    k, n = sum(answers[i] == dev[i].answer for i in answers), len(answers)
    lo, hi = wilson(k, n)
    texts = Counter(dev[i].options.get(a, "-") if a else "-" for i, a in answers.items())
    m = json.loads((run / "metrics.json").read_text())
    total = (m.get("usage") or {}).get("total") or {}
    per_call = total.get("prompt_tokens", 0) / max(1, total.get("calls", 0))
    return [str(n), f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]", count(Counter(a or "-" for a in answers.values())),
            count(texts), f"{per_call:.0f}", str(m.get("wall_s", "?"))]


def artifact_cells(art: Path) -> list[str]:
    """Demos (bootstrapped / gold), the instruction when changed, compile calls and wall time."""
    body = json.loads((art / "program.json").read_text())
    report = json.loads((art / "report.json").read_text())
    step = next(iter(body.get("steps", {}).values()), {})
    demos = step.get("demos") or []
    boot = sum(1 for d in demos if d.get("augmented"))
    comp = report.get("compile", {})
    total = (comp.get("usage") or {}).get("total") or {}
    return [f"{len(demos)} ({boot} bootstrapped)", f"{total.get('calls', 0)} calls, {comp.get('wall_s', '?')} s"]


def diff_cell(path: Path) -> str:
    if not path.is_file():
        return "-"
    c = json.loads(path.read_text())
    return f"{c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] (n={c['n_shared']})"


def instruction_notes(a: argparse.Namespace, base_instructions: str) -> list[str]:
    """Each arm's chosen instruction; mipro's trial scores on val, its proposals and failed proposals."""
    lines = []
    for arm in a.arms.split(","):
        art = a.out / arm / "artifact"
        if not (art / "program.json").is_file():
            continue
        step = next(iter(json.loads((art / "program.json").read_text()).get("steps", {}).values()), {})
        ins = " ".join(str(step.get("instructions") or "").split())
        same = ins == " ".join(base_instructions.split())
        lines.append(f"{arm} instruction: " + ("unchanged (the signature's own)" if same else repr(ins)))
        comp = json.loads((art / "report.json").read_text()).get("compile", {})
        cands = comp.get("candidates") or []
        if cands:
            lines.append(f"{arm} candidate scores on val: " + ", ".join(
                f"{c.get('score', 0):.3f}" if isinstance(c, dict) else str(c) for c in cands))
        proposed = (comp.get("notes") or {}).get("proposed_instructions")
        if proposed:
            lines.append(f"{arm} instructions proposed by {a.model} (the first is replaced by the original): "
                         + " | ".join(repr(" ".join(x.split())) for x in proposed))
        failed = (comp.get("notes") or {}).get("failed_proposals")
        if failed:
            lines.append(f"{arm} failed instruction proposals ({len(failed)}): {failed[:3]}")
    return lines


def table(a: argparse.Namespace) -> str:
    """The results on disk as a markdown table."""
    from medprog.programs.creason import PROGRAM

    dev = {t.id: t for t in load_tasks(a.data / "dev.jsonl")}
    head = ("| arm | n | dev accuracy [95% Wilson] | predicted letters | predicted options | prompt tokens/call "
            "| eval wall s | diff vs base [paired bootstrap 95% CI] | demos | compile |")
    lines = [f"dev: {len(dev)} tasks from {a.data / 'dev.jsonl'}; optimizers' train {a.out / 'train.jsonl'}, "
             f"val {a.out / 'val.jsonl'}", "", head, "|" + "---|" * 10]
    if (a.data / "base" / "metrics.json").is_file():
        lines.append(f"| {a.model} base (cot=false) | " + " | ".join(eval_cells(a.data / "base", dev))
                     + " | - | 0 | - |")
    for arm in a.arms.split(","):
        run, art = a.out / arm / "eval", a.out / arm / "artifact"
        if not (run / "metrics.json").is_file() or not (art / "report.json").is_file():
            continue
        cells = eval_cells(run, dev) + [diff_cell(a.out / arm / "compare.json")] + artifact_cells(art)
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += [""] + instruction_notes(a, PROGRAM.build(cot=False).reason.signature.instructions)
    walls = a.out / "stages.json"
    if walls.is_file():
        lines.append("stage wall s: " + ", ".join(f"{k} {v}" for k, v in json.loads(walls.read_text()).items()))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("runs/creason-grpo"), help="creason_grpo.py's --out")
    p.add_argument("--out", type=Path, default=Path("runs/prompt-opt"))
    p.add_argument("--model", default="smollm2", help="embedded model name or model directory")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-n", type=int, default=48, help="training tasks the optimizers draw demos from")
    p.add_argument("--val-n", type=int, default=24, help="mipro's validation tasks")
    p.add_argument("--demos", type=int, default=2, help="most demos per predictor (bootstrapped, then gold)")
    p.add_argument("--mipro-candidates", type=int, default=3, help="instruction and demo-set candidates")
    p.add_argument("--mipro-trials", type=int, default=4)
    p.add_argument("--view-data-batch-size", type=int, default=10, help="mipro's data-summary batch")
    p.add_argument("--prompt-max-tokens", type=int, default=256, help="token limit of one proposal")
    p.add_argument("--report-limit", type=int, default=8, help="val tasks each compile's own report scores")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--concurrency", type=int, default=4, help="examples in flight (batched by the engine)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset, per arm")
    p.add_argument("--table", action="store_true", help="only print the table of what is on disk")
    a = p.parse_args()
    if not a.table:
        run_all(a)
    print(table(a))


if __name__ == "__main__":
    main()
