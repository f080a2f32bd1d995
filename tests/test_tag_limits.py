"""Span limits derived from the training annotations become part of the tagging constraint.

The tagger derives them at compile time (`fit_settings`), the artifact stores them in its
settings, the loaded program passes them to every call's constraint, and the automaton enforces
them: no eighth tag opened on one word when the training notes never opened two.
"""

from __future__ import annotations

import dspy
import pytest

from medprog.artifact import load_artifact, save_artifact
from medprog.data.meddec import Decision, MedDecNote
from medprog.engines.constraints import TaggedConstraint, from_response_format, tagged_regex
from medprog.engines.tagging import TagLimits, parse_tagged, render_tagged
from medprog.engines.tagging_processor import automaton_for
from medprog.programs import tagger
from medprog.signatures.adapter import MedprogAdapter, constrained_kwargs
from medprog.signatures.tagging import DECISION_TAGS, TagDecisions

TAGS = list(DECISION_TAGS)
NOTE = "Patient was started on aspirin 81 mg daily. CT of the chest showed no acute process."


def _examples() -> list[dspy.Example]:
    """Two notes: one with two overlapping spans (never two opening together), the longest 5 words."""
    a = MedDecNote(id="a", text=NOTE, decisions=[Decision(start=0, end=42, category=3),
                                                   Decision(start=23, end=42, category=1)])
    b = MedDecNote(id="b", text="Will follow up with cardiology.", decisions=[Decision(start=5, end=30, category=9)])
    return [dspy.Example(id=n.id, note=n.text, tagged=render_tagged(n.text, tagger.note_spans(n)),
                         meddec=n.model_dump()).with_inputs("note") for n in (a, b)]


def _opened_after(automaton, n: int) -> list[int]:
    """Open ``n`` different tags at the first position; return the tokens allowed next."""
    for tag in TAGS[:n]:
        for token in automaton.open_ids[tag]:
            automaton.advance(token)
    return automaton.allowed()


def test_automaton_refuses_an_eighth_open_at_one_position_when_the_limit_is_two(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    free = automaton_for(NOTE, TAGS, tok, tok.eos_token_id)
    first_open = {seq[0] for seq in free.open_ids.values()}
    assert first_open & set(_opened_after(free, 7))  # no limits: an eighth tag may open here
    limit = TagLimits(max_opens_per_position=2)
    assert first_open & set(_opened_after(automaton_for(NOTE, TAGS, tok, tok.eos_token_id, limit), 1))
    capped = automaton_for(NOTE, TAGS, tok, tok.eos_token_id, limit)
    assert not first_open & set(_opened_after(capped, 2))
    with pytest.raises(ValueError, match="outside the tagging constraint"):
        capped.advance(capped.open_ids[TAGS[7]][0])


def test_limits_derived_from_training_windows():
    limits = tagger.derive_limits(tagger.train_examples(_examples(), {"window_chars": 1}))
    # most opening together 1, most open at once 2 (+ margin 1); longest span 8 words and 7 gaps (x 1.5)
    assert limits == TagLimits(max_opens_per_position=2, max_open=3, max_span_units=23)
    assert tagger.derive_limits([]) == TagLimits()


def test_trained_settings_round_trip_into_every_call_constraint(tmp_path, tiny_engine):
    settings = {**tagger.PROGRAM.defaults, **tagger.fit_settings(_examples(), tagger.PROGRAM.defaults)}
    save_artifact(tmp_path / "art", tagger.PROGRAM, tagger.Tagger(**settings), settings=settings)
    art = load_artifact(tmp_path / "art")
    limits = TagLimits.model_validate(art.settings["tag_limits"])
    assert limits.max_opens_per_position == 2 and art.module.tag.config["tag_limits"] == limits.model_dump()

    kwargs = constrained_kwargs({"temperature": 0.0, **art.module.tag.config}, TagDecisions, {"note": NOTE})
    assert "tag_limits" not in kwargs
    c = from_response_format(kwargs["response_format"])
    assert isinstance(c, TaggedConstraint) and c.limits == limits
    assert "{0,2}" in tagged_regex(c) and "{0,2}" not in tagged_regex(c.model_copy(update={"limits": None}))

    # a random tiny model opens tags freely; under the loaded limits its output keeps them
    with dspy.context(lm=tiny_engine.as_lm(temperature=0.0), adapter=MedprogAdapter()):
        tagged = str(art.module(note=NOTE).tagged)
    _, spans = parse_tagged(tagged, TAGS)
    assert len(spans) > 3  # without limits it opens six tags on the first word
    assert all(sum(o.start == s.start for o in spans) <= 2 for s in spans)
    assert all(sum(o.start <= p < o.end for o in spans) <= 3 for p in range(len(NOTE)))


def test_no_limits_setting_leaves_the_constraint_unbounded():
    module = tagger.Tagger(tag_limits=None)
    assert "tag_limits" not in module.tag.config
    c = from_response_format(constrained_kwargs({}, TagDecisions, {"note": NOTE})["response_format"])
    assert c.limits is None


def test_limits_are_a_build_setting_and_bad_ones_are_named():
    from medprog.cli_common import UsageError, build_program

    module = build_program(tagger.PROGRAM, ['tag_limits={"max_open": 2}'])
    assert module.tag.config["tag_limits"]["max_open"] == 2
    with pytest.raises(UsageError, match="^tagger settings: tag_limits.max_open: Input should be greater than 0$"):
        build_program(tagger.PROGRAM, ['tag_limits={"max_open": 0}'])
