"""Property tests: a random untrained model under each constraint always yields a parseable output."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Literal, get_args, get_origin

import annotated_types
import dspy
import pytest
from pydantic import BaseModel

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


def sample_value(ann: Any, max_chars: int | None = None) -> Any:
    """A small valid value of an input annotation: text, numbers, one-item lists, filled models."""
    origin, args = get_origin(ann), get_args(ann)
    if ann is bool:
        return False
    if ann in (int, float):
        return 3
    if origin is Literal:
        return args[0]
    if origin is list:
        return [sample_value(args[0])]
    if origin is dict:
        return {"A": "first option", "B": "second option"}
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann.model_validate({k: sample_value(f.annotation, max_len(f)) for k, f in ann.model_fields.items()})
    return NOTE[:max_chars]


def max_len(field: Any) -> int | None:
    return next((m.max_length for m in field.metadata if isinstance(m, annotated_types.MaxLen)), None)


def sample_inputs(sig: type) -> dict[str, Any]:
    return {name: sample_value(field.annotation) for name, field in sig.input_fields.items()}


def assert_outputs_parse(engine: Any, sig: type, n: int, seed: int, temperature: float = 1.0) -> None:
    """``n`` sampled outputs of ``sig`` under its constraint all parse into the declared types."""
    inputs = sample_inputs(sig)
    constraint = constraint_for(sig, inputs)
    prompt = format_messages(sig, [], inputs)
    results = engine.generate([prompt] * n, [constraint] * n, Sampling(temperature=temperature, seed=seed,
                                                                         max_tokens=4096))
    for r in results:
        assert r.error is None, r.error
        parse_output(sig, r.text)  # raises if the text does not parse into the declared types


@pytest.mark.slow
@pytest.mark.parametrize("sig", declared_signatures(), ids=lambda s: s.__name__)
def test_every_declared_output_type_parses_under_its_constraint(sig, tiny_engine, monkeypatch):
    # A random model fills free strings to their bound; a smaller bound keeps the run short
    # without changing how the constraint is built.
    monkeypatch.setattr("medprog.engines.constraints.MAX_STRING_CHARS", 40)
    monkeypatch.setattr("medprog.engines.constraints.MAX_LIST_ITEMS", 3)
    assert_outputs_parse(tiny_engine, sig, SEEDS, seed=7)


class Tagging(Signature):
    note: str = dspy.InputField()
    tagged: TaggedText["note", ("drug_decision", "evaluate_result", "defer_decision")] = dspy.OutputField()


class Pick(Signature):
    question: str = dspy.InputField()
    answer: Literal["A", "B", "C", "D", "E"] = dspy.OutputField()


def spy_generated_ids(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Record the completion token ids of every row the engine's model generates."""
    seen: list[list[int]] = []
    generate, tok = engine.model.generate, engine.tokenizer

    def recording(*args: Any, input_ids: Any, **kwargs: Any) -> Any:
        seqs = generate(*args, input_ids=input_ids, **kwargs)
        for row in seqs[:, input_ids.shape[1]:].tolist():
            end = row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
            seen.append([t for t in row[:end] if t != tok.pad_token_id])
        return seqs

    monkeypatch.setattr(engine.model, "generate", recording)
    return seen


def assert_tagged_properties(engine: Any, seeds: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tagged outputs copy the note exactly, tags balance and are non-empty, tokens are canonical."""
    generated = spy_generated_ids(engine, monkeypatch)
    constraint = constraint_for(Tagging, {"note": NOTE})
    prompt = format_messages(Tagging, [], {"note": NOTE})
    for seed in range(seeds):
        (r,) = engine.generate([prompt], [constraint], Sampling(temperature=1.0, seed=seed))
        assert r.error is None and r.finish_reason == "stop"
        assert strip_tags(r.text) == NOTE
        text, spans = parse_tagged(r.text, list(constraint.tags))  # every tag closes, none empty
        assert text == NOTE and all(s.end > s.start for s in spans)
        assert generated[-1] == canonical_ids(r.text, engine.tokenizer)


def assert_choices(engine: Any, seeds: int) -> None:
    inputs = {"question": "Which option?"}
    c = constraint_for(Pick, inputs)
    assert output_mode(Pick) == "choice"
    results = engine.generate([format_messages(Pick, [], inputs)] * seeds, [c] * seeds,
                              Sampling(temperature=1.0, seed=3, max_tokens=8))
    assert all(r.error is None for r in results)
    assert {parse_output(Pick, r.text)["answer"] for r in results} <= set("ABCDE")


def test_tagged_text_properties_over_20_seeds(tiny_engine, monkeypatch):
    assert_tagged_properties(tiny_engine, SEEDS, monkeypatch)


def test_choice_and_json_outputs_over_20_seeds(tiny_engine):
    assert_choices(tiny_engine, SEEDS)


# The same properties on a real pretrained model and its 49k-token vocabulary, where tags are
# several tokens sharing a prefix and JSON grammars meet a large vocabulary. A few samples each,
# at a temperature where the model still writes words: at 1.0 it wanders through the vocabulary
# and fills every string to its bound, which multiplies the run time and tests nothing more.
SMOL_SEEDS = 2
SMOL_TEMPERATURE = 0.7


@pytest.mark.slow
@pytest.mark.parametrize("sig", declared_signatures(), ids=lambda s: s.__name__)
def test_every_declared_output_type_parses_on_smollm2(sig, smollm2_engine, monkeypatch):
    monkeypatch.setattr("medprog.engines.constraints.MAX_STRING_CHARS", 40)
    monkeypatch.setattr("medprog.engines.constraints.MAX_LIST_ITEMS", 3)
    assert_outputs_parse(smollm2_engine, sig, SMOL_SEEDS, seed=7, temperature=SMOL_TEMPERATURE)


@pytest.mark.slow
def test_tagged_text_properties_on_smollm2(smollm2_engine, monkeypatch):
    assert_tagged_properties(smollm2_engine, 3, monkeypatch)


@pytest.mark.slow
def test_choice_outputs_on_smollm2(smollm2_engine):
    assert_choices(smollm2_engine, 4)
