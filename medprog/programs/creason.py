"""`creason`: clinical reasoning over registry records (C-Reason).

One constrained call reasons step by step over a serialised patient record and answers a
masked-variable or outcome question with one of the task's own option letters (``cot=True``, the
default: C-Reason's JSON reasoning then answer); with ``cot=False`` the model writes the letter
alone under a choice constraint (what GRPO trains cheaply on a small model). The call's
inputs are exactly the example's inputs, so training prompts (dft, grpo) match inference. The
per-example score is the exact letter match, which is also the GRPO reward (`grpo_reward`).
Tasks come from a registry CSV (built by `medprog.data.patient_registry.build_tasks`: masked variable,
MI filter, mixture-spread distractors, outcome question) or a prebuilt tasks jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dspy

from medprog.data.patient_registry import build_tasks, load_registry, load_tasks, registry_path, split_rows
from medprog.engines.accounting import step
from medprog.metrics.mcq import mcq_metrics
from medprog.programs.multiagent import narrowed_call, tracked
from medprog.programs.registry import Record, declare
from medprog.signatures.creason import ClinicalAnswer, ClinicalReasoning


class CReason(dspy.Module):
    """Reason over the record (``cot=True``) or not, answer one letter."""

    def __init__(self, cot: bool = True) -> None:
        super().__init__()
        if not isinstance(cot, bool):
            raise ValueError(f"creason: cot must be true or false, got {cot!r}")
        self.cot = cot
        self.reason = dspy.Predict(ClinicalReasoning if cot else ClinicalAnswer)  # one predictor, one name

    def forward(self, record: str, question: str, options: dict[str, str]) -> dspy.Prediction:
        with tracked() as usage, step("reason" if self.cot else "answer"):
            out = narrowed_call(self.reason, "answer", list(options), record=record, question=question,
                                options=options)
        return dspy.Prediction(answer=out.answer, reasoning=out.get("reasoning"), usage=usage)


def load(path: str | Path, split: str | None = None) -> list[dspy.Example]:
    """A registry CSV or a directory holding ``registry.csv`` (tasks built with seed 0; ``split``
    train/test by patient), or tasks (`medprog.data.patient_registry.write_tasks`) as jsonl, parquet or a
    ``save_to_disk`` directory."""
    path = registry_path(path)
    if path.suffix == ".csv":
        registry = load_registry(path)
        tasks = build_tasks(registry, rows=split_rows(registry, split))
    else:
        tasks = load_tasks(path)
    return [dspy.Example(id=t.id, record=t.record, question=t.question, options=t.options, answer=t.answer,
                         variable=t.variable, kind=t.kind).with_inputs("record", "question", "options")
            for t in tasks]


def to_record(example: dspy.Example, prediction: Any) -> Record:
    return {"id": example.id, "answer": prediction.answer, "gold": example.get("answer"),
            "correct": prediction.answer == example.get("answer"), "kind": example.get("kind"),
            "variable": example.get("variable"), "reasoning": prediction.get("reasoning"),
            "usage": prediction.get("usage") or {}}


def metrics(examples: list[dspy.Example], records: list[Record]) -> dict[str, Any]:
    """Accuracy overall and per task kind (masked variable, outcome), with calls and tokens."""
    out = mcq_metrics({str(e.id): e.get("answer") for e in examples}, [{**r, "mode": r.get("kind")} for r in records])
    if "per_mode" in out:
        out["per_kind"] = out.pop("per_mode")
    return out


def score(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    """Exact letter match (the GRPO reward)."""
    return float(prediction.answer == example.get("answer"))


def exact_letter(completion: str, answer: str) -> float:
    """1.0 when a raw completion (the adapter's JSON, or a bare letter) answers ``answer``."""
    try:
        value = json.loads(completion)
        value = value.get("answer") if isinstance(value, dict) else value
    except json.JSONDecodeError:
        value = completion.strip()
    return float(value == answer)


def grpo_reward(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
    """TRL-style reward function: exact letter match per completion (text or chat messages)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [exact_letter(t, a) for t, a in zip(texts, answer)]


PROGRAM = declare(
    __name__,
    name="creason",
    task="clinical reasoning over registry records (masked variable / outcome)",
    metric="accuracy (GRPO reward: exact letter)",
    build=CReason,
    defaults={"cot": True},
)
