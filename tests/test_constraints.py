"""Constraints derived from signatures; declaration-time errors; reply validation."""

from typing import Literal

import dspy
import pytest
from pydantic import BaseModel

from medprog.engines.constraints import (
    ChoiceConstraint, ConstraintViolation, JsonConstraint, TaggedConstraint, check_text, constraint_for,
    from_response_format, parse_output, to_response_format,
)
from medprog.signatures import Signature, TaggedText, UnconstrainableOutputError


class Finding(BaseModel):
    name: str
    severity: Literal["mild", "severe"]


class Report(Signature):
    """Summarise."""
    note: str = dspy.InputField()
    findings: list[Finding] = dspy.OutputField()
    urgent: bool = dspy.OutputField()


class Pick(Signature):
    question: str = dspy.InputField()
    answer: Literal["A", "B", "C"] = dspy.OutputField()


class Tag(Signature):
    note: str = dspy.InputField()
    tagged: TaggedText["note", ("x", "y")] = dspy.OutputField()


def test_unconstrainable_output_is_an_error_naming_the_field():
    with pytest.raises(UnconstrainableOutputError, match=r"Bad\.blob"):
        class Bad(Signature):
            q: str = dspy.InputField()
            blob: dict = dspy.OutputField()
    with pytest.raises(UnconstrainableOutputError, match="source field 'text'"):
        class Bad2(Signature):
            q: str = dspy.InputField()
            out: TaggedText["text", ("x",)] = dspy.OutputField()


def test_json_constraint_is_closed_and_bounded():
    c = constraint_for(Report, {"note": "n"})
    assert isinstance(c, JsonConstraint)
    schema = c.json_schema
    assert schema["additionalProperties"] is False
    finding = schema["$defs"]["Finding"]
    assert finding["additionalProperties"] is False and finding["properties"]["name"]["maxLength"] > 0
    check_text(c, '{"findings":[{"name":"cough","severity":"mild"}],"urgent":false}')
    for bad in ['{"findings":[],"urgent":false,"extra":1}', '{"findings":[{"name":"x","severity":"bad"}],"urgent":true}',
                '{"findings":[]}', "not json"]:
        with pytest.raises(ConstraintViolation):
            check_text(c, bad)


def test_choice_and_tagged_constraints_round_trip_through_response_format():
    for c in [constraint_for(Pick, {"question": "q"}), constraint_for(Tag, {"note": "a b"})]:
        assert from_response_format(to_response_format(c)) == c
    assert constraint_for(Pick, {"question": "q"}) == ChoiceConstraint(choices=["A", "B", "C"])
    assert constraint_for(Tag, {"note": "a b"}) == TaggedConstraint(text="a b", tags=["x", "y"])


def test_tagged_reply_must_copy_the_source():
    c = TaggedConstraint(text="a b c", tags=["x"])
    check_text(c, "a <x>b</x> c")
    with pytest.raises(ConstraintViolation, match="does not copy"):
        check_text(c, "a <x>B</x> c")
    with pytest.raises(ConstraintViolation):
        check_text(c, "a <x>b c")
    assert parse_output(Pick, "B") == {"answer": "B"}
    with pytest.raises(ConstraintViolation):
        parse_output(Pick, "D")
