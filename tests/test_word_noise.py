"""Word noise for tagged training examples: spans and their words kept, other words replaced."""

from __future__ import annotations

import random

import dspy
import pytest

from medprog.engines.tagging import Span, parse_tagged
from medprog.optimizers.dft_config import DFTConfig
from medprog.optimizers.word_noise import noise_text, replacement_words, with_word_noise
from medprog.signatures.tagging import TagDecisions

WORDS = ("alpha", "bravo", "charlie")
TEXT = "Pt seen. He was Started on aspirin 81 mg daily, then disch-arged home."


def _words(text: str) -> list[str]:
    return text.replace(",", " ").replace(".", " ").split()


def test_every_word_outside_spans_replaced_at_rate_one_and_spans_follow_their_words():
    spans = [Span(start=16, end=46, tag="drug_decision"), Span(start=65, end=69, tag="contact_related")]
    assert (TEXT[16:46], TEXT[65:69]) == ("Started on aspirin 81 mg daily", "home")
    new, moved = noise_text(TEXT, spans, 1.0, random.Random(0), WORDS)
    assert [new[s.start:s.end] for s in moved] == ["Started on aspirin 81 mg daily", "home"]
    before, after = _words(TEXT), _words(new)
    assert len(before) == len(after)
    outside = {"Pt", "seen", "He", "was", "then", "disch-arged"}
    for old, word in zip(before, after):
        if old in outside:
            assert word.lower().split("-")[0] in WORDS and word != old
            assert word[0].isupper() == old[0].isupper()  # capitalisation kept
    assert new.endswith(".") and ", " in new  # punctuation and spacing untouched


def test_a_word_cut_by_a_span_boundary_is_kept():
    text = "Restarted metoprolol today"
    spans = [Span(start=2, end=20, tag="drug_decision")]  # cuts "Restarted"
    new, moved = noise_text(text, spans, 1.0, random.Random(0), WORDS)
    assert new.startswith("Restarted metoprolol ") and new[moved[0].start:moved[0].end] == "started metoprolol"


def test_rate_zero_changes_nothing_and_the_copy_parses_back_to_its_source():
    gold = "Pt seen. He was <drug_decision>Started on aspirin</drug_decision> today."
    ex = dspy.Example(id="n1", note=parse_tagged(gold)[0], tagged=gold).with_inputs("note")
    assert with_word_noise(TagDecisions, [ex], 0.0, 1.0) == with_word_noise(TagDecisions, [ex], 0.5, 0.0) == [ex]
    noised, = with_word_noise(TagDecisions, [ex], 0.5, 1.0, seed=3)
    assert set(noised.inputs().keys()) == {"note"}
    text, spans = parse_tagged(noised.tagged)
    assert text == noised.note != ex.note
    assert [text[s.start:s.end] for s in spans] == ["Started on aspirin"]


def test_share_of_examples_noised():
    gold = "He was <drug_decision>Started on aspirin</drug_decision> today in the clinic with his wife."
    exs = [dspy.Example(id=str(i), note=parse_tagged(gold)[0], tagged=gold).with_inputs("note") for i in range(400)]
    out = with_word_noise(TagDecisions, exs, 0.5, 0.25, seed=0)
    changed = sum(o.note != e.note for o, e in zip(out, exs))
    assert len(out) == 400 and 60 <= changed <= 140


def test_replacement_words_are_a_general_vocabulary_and_the_rate_is_validated():
    words = replacement_words()
    assert len(words) > 10_000 and {"hospital", "river"} <= set(words)
    with pytest.raises(ValueError, match="word_noise"):
        DFTConfig(word_noise=1.5)
    with pytest.raises(ValueError, match="word_noise_share"):
        DFTConfig(word_noise_share=-0.1)


def test_a_noised_row_trains_the_choices_but_not_the_copy(tiny_engine):
    from medprog.optimizers.batches import training_rows

    gold = "He was <drug_decision>Started on aspirin</drug_decision> today in the clinic."
    ex = dspy.Example(id="n1", note=parse_tagged(gold)[0], tagged=gold).with_inputs("note")
    noised, = with_word_noise(TagDecisions, [ex], 0.5, 1.0, seed=1)
    clean_row, noised_row = training_rows(TagDecisions, [ex, noised], tiny_engine.tokenizer, choice=True)
    assert any(lab != -100 for lab in clean_row["copy_labels"])
    assert set(noised_row["copy_labels"]) == {-100} and noised_row["dp_targets"]
