"""Decision tagging signatures (LAMAR / MedExACT)."""

from __future__ import annotations

import dspy

from medprog.signatures.base import Signature, TaggedText

DECISION_TAGS = (
    "contact_related", "gather_info", "define_problem", "treatment_goal", "drug_decision",
    "therapeutic_procedure", "evaluate_result", "defer_decision", "advice_and_precaution",
)


class TagDecisions(Signature):
    """Copy the discharge summary verbatim and wrap each clinical decision in the tag of its
    category. Every tag closes. Prefer whole decision phrases. Never tag section headers."""

    note: str = dspy.InputField(desc="discharge summary")
    tagged: TaggedText["note", DECISION_TAGS] = dspy.OutputField(desc="the note with decision tags")  # type: ignore[type-arg, valid-type]
