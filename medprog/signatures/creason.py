"""C-Reason signature: step-by-step clinical reasoning over a serialised registry record."""

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
