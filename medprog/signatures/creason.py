"""C-Reason signatures: clinical reasoning over a serialised registry record.

`ClinicalReasoning` is C-Reason's own call (step-by-step reasoning, then the letter, one JSON
object); `ClinicalAnswer` asks for the letter alone (a choice constraint), the short form a
small model can be trained on by GRPO at a cost of one or two completion tokens per rollout.
Both answer fields are narrowed per task to its own option letters (`with_choices`).
"""

from __future__ import annotations

from typing import Literal

import dspy

from medprog.signatures.base import Signature

Letter = Literal["A", "B", "C", "D", "E"]


class ClinicalReasoning(Signature):
    """You are a clinician reading a patient's registry record. Reason step by step from the
    recorded variables to answer the question, then choose one option."""

    record: str = dspy.InputField(desc="the patient's record, in sections")
    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    reasoning: str = dspy.OutputField()
    answer: Letter = dspy.OutputField(desc="the letter of the chosen option")


class ClinicalAnswer(Signature):
    """You are a clinician reading a patient's registry record. Answer the question from the
    recorded variables by choosing one option."""

    record: str = dspy.InputField(desc="the patient's record, in sections")
    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    answer: Letter = dspy.OutputField(desc="the letter of the chosen option")
