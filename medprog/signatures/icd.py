"""ICD-10-CM coding signatures (Code Like Humans: analyse → locate → verify → assign).

Code lists are typed ``list[str]`` here; the program narrows each call to
``list[Literal[this call's candidate codes]]``, so a model can only pick codes it was shown.
"""

from __future__ import annotations

from typing import Annotated

import dspy
from pydantic import Field

from medprog.signatures.base import Signature

LeadTerm = Annotated[str, Field(min_length=3, max_length=80)]


class AnalyseNote(Signature):
    """Read the clinical note as a medical coder would and list the lead terms to look up in the
    ICD-10-CM index: each diagnosis, condition or reason for the encounter that is documented as
    present. Leave out negated, ruled-out and merely suspected conditions."""

    note: str = dspy.InputField()
    # At least one term: a coded note documents a reason for the encounter, and an empty list (what
    # SmolLM2 wrote under an unbounded schema) ends the pipeline with no code at all.
    terms: Annotated[list[LeadTerm], Field(min_length=1, max_length=8)] = dspy.OutputField(
        desc="lead terms, most important first")


class LocateCodes(Signature):
    """For one lead term of the note, choose which candidate ICD-10-CM codes could describe it."""

    note: str = dspy.InputField()
    term: str = dspy.InputField()
    candidates: list[str] = dspy.InputField(desc="candidate codes with their titles")
    codes: list[str] = dspy.OutputField()


class VerifyCodes(Signature):
    """Check these candidate codes of one ICD-10-CM category against the note and their tabular
    instructional notes (inclusion terms, includes, excludes1, excludes2, code first, use
    additional code, code also). Keep only the codes the note supports and the notes allow."""

    note: str = dspy.InputField()
    tabular_notes: str = dspy.InputField()
    keep: list[str] = dspy.OutputField()


class AssignCodes(Signature):
    """Assign the final ICD-10-CM codes for the note from the verified candidates, principal
    diagnosis first. Do not code the same condition twice."""

    note: str = dspy.InputField()
    candidates: list[str] = dspy.InputField(desc="verified codes with their titles")
    codes: list[str] = dspy.OutputField()
