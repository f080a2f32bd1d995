"""Property tests: a random untrained model under each constraint always yields a parseable output."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Literal, get_args

import dspy
import pytest

import medprog.signatures as signatures_pkg
from medprog.engines.base import Sampling
from medprog.engines.constraints import constraint_for, output_mode, parse_output
from medprog.engines.tagging import parse_tagged, strip_tags
from medprog.engines.tagging_processor import canonical_ids
from medprog.signatures import Signature, TaggedText
from medprog.signatures.adapter import format_messages

NOTE = ("Pt was started on aspirin 81 mg daily for chest pain. CT of the chest showed no acute process. "
        "Will follow up with cardiology in two weeks; avoid heavy lifting.")
SEEDS = 20


def declared_signatures() -> list[type]:
    """Every concrete Signature the package declares."""
    found = {}
    for mod in pkgutil.iter_modules(signatures_pkg.__path__):
        module = importlib.import_module(f"medprog.signatures.{mod.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Signature) and obj is not Signature and obj.output_fields:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def sample_inputs(sig: type) -> dict[str, Any]:
    inputs = {}
    for name, field in sig.input_fields.items():
        ann = field.annotation
        if ann is str:
            inputs[name] = NOTE
        elif ann in (int, float):
            inputs[name] = 3
        elif get_args(ann) and ann.__origin__ is list:
            inputs[name] = []
        elif get_args(ann) and ann.__origin__ is dict:
            inputs[name] = {"A": "first option", "B": "second option"}
        elif isinstance(ann, type) and hasattr(ann, "model_fields"):
            pytest.skip(f"{sig.__name__}.{name}: structured input needs program data")
        else:
            inputs[name] = NOTE
    return inputs


@pytest.mark.slow
@pytest.mark.parametrize("sig", declared_signatures(), ids=lambda s: s.__name__)
def test_every_declared_output_type_parses_under_its_constraint(sig, tiny_engine, monkeypatch):
    # A random model fills free strings to their bound; a smaller bound keeps the run short
    # without changing how the constraint is built.
    monkeypatch.setattr("medprog.engines.constraints.MAX_STRING_CHARS", 40)
    monkeypatch.setattr("medprog.engines.constraints.MAX_LIST_ITEMS", 3)
    inputs = sample_inputs(sig)
    constraint = constraint_for(sig, inputs)
    prompt = format_messages(sig, [], inputs)
    results = tiny_engine.generate([prompt] * SEEDS, [constraint] * SEEDS,
                                   Sampling(temperature=1.0, seed=7, max_tokens=4096))
    for r in results:
        assert r.error is None, r.error
        parse_output(sig, r.text)  # raises if the text does not parse into the declared types


class Tagging(Signature):
    note: str = dspy.InputField()
    tagged: TaggedText["note", ("drug_decision", "evaluate_result", "defer_decision")] = dspy.OutputField()


class Pick(Signature):
    question: str = dspy.InputField()
    answer: Literal["A", "B", "C", "D", "E"] = dspy.OutputField()


def test_tagged_text_properties_over_20_seeds(tiny_engine):
    tok = tiny_engine.tokenizer
    constraint = constraint_for(Tagging, {"note": NOTE})
    prompt = format_messages(Tagging, [], {"note": NOTE})
    for seed in range(SEEDS):
        (r,) = tiny_engine.generate([prompt], [constraint], Sampling(temperature=1.0, seed=seed))
        assert r.error is None and r.finish_reason == "stop"
        assert strip_tags(r.text) == NOTE
        text, spans = parse_tagged(r.text, list(constraint.tags))  # every tag closes, none empty
        assert text == NOTE and all(s.end > s.start for s in spans)
        generated_ids = tok(r.text, add_special_tokens=False)["input_ids"]
        assert generated_ids == canonical_ids(r.text, tok)


def test_choice_and_json_outputs_over_20_seeds(tiny_engine):
    for sig in (Pick,):
        inputs = {"question": "Which option?"}
        c = constraint_for(sig, inputs)
        assert output_mode(sig) == "choice"
        results = tiny_engine.generate([format_messages(sig, [], inputs)] * SEEDS, [c] * SEEDS,
                                       Sampling(temperature=1.0, seed=3, max_tokens=8))
        assert {parse_output(sig, r.text)["answer"] for r in results} <= set("ABCDE")
