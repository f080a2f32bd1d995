"""The tagging automaton on a tokenizer without tag tokens: tags are several tokens sharing a prefix.

Random walks through the automaton (every step a uniformly random admissible token) must
always give a well-formed tagging of the source in its canonical tokenization, including
where the note itself holds ``<`` or ``</`` (a tag's first token is also the copy's next one).
Also: the optional span limits, and build time on a long note.
"""

from __future__ import annotations

import random
import time

import pytest

from medprog.engines.small_model import TEST_CORPUS, build_tokenizer
from medprog.engines.tagging import parse_tagged
from medprog.engines.tagging_processor import TagLimits, automaton_for, canonical_ids, tag_token_ids
from medprog.signatures.tagging import DECISION_TAGS

TAGS = list(DECISION_TAGS)
NOTE = ("<5 yo pt was started on aspirin 81 mg daily (</ chest pain). CT of the chest showed no acute process; "
        "will follow up with cardiology in two weeks (<drug and avoid heavy lifting.")


@pytest.fixture(scope="module")
def plain_tokenizer():
    """A byte-level BPE with no added tag tokens (as SmolLM2 and other standard tokenizers)."""
    return build_tokenizer(TEST_CORPUS * 4 + [NOTE], 600, tags=())


def walk(automaton, rng: random.Random, open_bias: float = 0.3) -> list[int]:
    """Tokens of one random path: any admissible token with probability ``open_bias``, else the last
    admissible one (the copy's next token, when there is a choice to write a tag or copy on)."""
    out = []
    while not automaton.done:
        allowed = automaton.allowed()
        token = rng.choice(allowed) if rng.random() < open_bias else allowed[-1]
        automaton.advance(token)
        out.append(token)
        assert len(out) <= automaton.max_tokens()
    return out


def test_tags_are_multi_token_and_share_first_tokens(plain_tokenizer):
    opens, closes = tag_token_ids(plain_tokenizer, TAGS)
    assert all(len(seq) > 1 for seq in [*opens.values(), *closes.values()])
    assert len({seq[0] for seq in opens.values()}) < len(opens)  # the old automaton refused this
    note_ids = plain_tokenizer(NOTE, add_special_tokens=False)["input_ids"]
    assert {seq[0] for seq in opens.values()} & set(note_ids)  # and the note shares them


@pytest.mark.parametrize("seed", range(40))
def test_random_walks_give_exact_canonical_taggings(plain_tokenizer, seed):
    tok, eos = plain_tokenizer, plain_tokenizer.eos_token_id
    automaton = automaton_for(NOTE, TAGS, tok, eos)
    ids = walk(automaton, random.Random(seed), open_bias=0.05 + 0.02 * seed)
    assert ids[-1] == eos
    tagged = tok.decode(ids[:-1])
    text, spans = parse_tagged(tagged, TAGS)  # balanced, known tags, no empty span
    assert text == NOTE and all(s.end > s.start for s in spans)
    assert ids[:-1] == canonical_ids(tagged, tok)


def test_tag_open_where_the_copy_also_starts_with_its_first_token(plain_tokenizer):
    """Before ``<5`` the automaton follows both readings and lets the next token decide."""
    tok, eos = plain_tokenizer, plain_tokenizer.eos_token_id
    tagged = "<drug_decision><5 yo</drug_decision>" + NOTE[len("<5 yo"):]
    automaton = automaton_for(NOTE, TAGS, tok, eos)
    for token in canonical_ids(tagged, tok) + [eos]:
        assert token in automaton.allowed()
        automaton.advance(token)
    assert automaton.done


def test_single_token_tags_still_work(tiny_engine):
    tok = tiny_engine.tokenizer
    opens, _ = tag_token_ids(tok, TAGS)
    assert all(len(seq) == 1 for seq in opens.values())
    for seed in range(5):
        automaton = automaton_for(NOTE, TAGS, tok, tok.eos_token_id)
        ids = walk(automaton, random.Random(seed))
        assert parse_tagged(tok.decode(ids[:-1]), TAGS)[0] == NOTE


def test_limits_bound_what_a_walk_can_write(plain_tokenizer):
    tok, eos = plain_tokenizer, plain_tokenizer.eos_token_id
    limits = TagLimits(max_opens_per_position=1, max_open=2, min_span_units=2)

    def spans_of(seed: int, lim: TagLimits | None):
        automaton = automaton_for(NOTE, TAGS, tok, eos, lim)
        text, spans = parse_tagged(tok.decode(walk(automaton, random.Random(seed), open_bias=0.6)[:-1]), TAGS)
        assert text == NOTE
        return automaton.layout.units, spans

    limited = [spans_of(seed, limits) for seed in range(30)]
    assert sum(len(spans) for _, spans in limited) > 20
    for units, spans in limited:
        starts = [s.start for s in spans]
        assert len(starts) == len(set(starts))  # one span opens per position
        assert all(sum(s.start <= p < s.end for s in spans) <= 2 for p in range(len(NOTE)))
        assert all(sum(a < s.end and b > s.start for a, b in units) >= 2 for s in spans)
    unlimited = [spans_of(seed, None)[1] for seed in range(30)]
    assert any(len({s.start for s in spans}) < len(spans) for spans in unlimited)
    assert any(sum(s.start <= p < s.end for s in spans) > 2 for spans in unlimited for p in range(len(NOTE)))

    capped = [spans_of(seed, TagLimits(max_span_units=3)) for seed in range(30)]
    longest = max(sum(a < s.end and b > s.start for a, b in units) for units, spans in capped for s in spans)
    assert longest <= 4  # closes at the first closing position at or past 3 units


def test_long_note_builds_fast(plain_tokenizer):
    note = " ".join([NOTE] * 130)  # ~20,000 characters
    automaton_for(note[:500], TAGS, plain_tokenizer, plain_tokenizer.eos_token_id)
    start = time.process_time()
    automaton = automaton_for(note, TAGS, plain_tokenizer, plain_tokenizer.eos_token_id)
    assert time.process_time() - start < 0.5  # ~25 ms measured at a 129k vocabulary; loose for CI
    assert "".join(note[a:b] for a, b in automaton.layout.units) == note
