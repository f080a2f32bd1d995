"""`mcq`: one-call medical multiple-choice QA, the baseline the agent programs are read against.

One constrained call per question: with ``cot=False`` the model writes only a letter (a choice
constraint over the question's own option letters); with ``cot=True`` it reasons step by step
and then gives the letter (a JSON object, ``reasoning`` before ``answer``). Only the question and
the options reach the prompt; data, metric and records are those of `mdagents`, so the two
programs' runs compare directly (`medprog compare`).
"""

from __future__ import annotations

from typing import Any

import dspy

from medprog.engines.accounting import step
from medprog.programs import mdagents
from medprog.programs.multiagent import narrowed_call, tracked
from medprog.programs.registry import declare
from medprog.signatures.mcq import AnswerChoice, ReasonThenChoose


class MultipleChoice(dspy.Module):
    """Answer with one letter, optionally after chain-of-thought reasoning in the same call."""

    def __init__(self, cot: bool = False) -> None:
        super().__init__()
        if not isinstance(cot, bool):
            raise ValueError(f"mcq: cot must be true or false, got {cot!r}")
        self.cot = cot
        self.answer = dspy.Predict(ReasonThenChoose if cot else AnswerChoice)

    def forward(self, question: str, options: dict[str, str]) -> dspy.Prediction:
        with tracked() as usage, step("answer"):
            out = narrowed_call(self.answer, "answer", list(options), question=question, options=dict(options))
        return dspy.Prediction(answer=out.answer, reasoning=out.get("reasoning"), mode="cot" if self.cot else "direct",
                               usage=usage)


def to_record(example: dspy.Example, prediction: Any) -> dict[str, Any]:
    return {"id": example.id, "answer": prediction.answer, "gold": example.get("answer"),
            "correct": prediction.answer == example.get("answer"), "mode": prediction.get("mode"),
            "reasoning": prediction.get("reasoning"), "usage": prediction.get("usage") or {}}


PROGRAM = declare(
    __name__,
    name="mcq",
    task="medical multiple-choice QA in one call (MedQA-style; cot=true reasons first)",
    metric="accuracy; calls and tokens per question",
    build=MultipleChoice,
    load=mdagents.load,
    metrics=mdagents.metrics,
    score=mdagents.score,
    defaults={"cot": False},
)
