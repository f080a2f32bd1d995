"""Tagged-text representation: rendering, parsing, layouts, canonical tokenization."""

import pytest

from medprog.engines.tagging import Span, TaggedParseError, parse_tagged, render_tagged, word_layout
from medprog.engines.tagging_processor import canonical_ids, tokenizer_layout

TEXT = "Pt was started on aspirin 81 mg. Will follow up."


def test_render_parse_round_trip_with_crossing_spans():
    spans = [Span(start=7, end=31, tag="a"), Span(start=18, end=25, tag="b"), Span(start=26, end=37, tag="c")]
    tagged = render_tagged(TEXT, spans)
    assert tagged == "Pt was <a>started on <b>aspirin</b> <c>81 mg</a>. Will</c> follow up."
    text, back = parse_tagged(tagged)
    assert text == TEXT
    assert back == sorted(spans, key=lambda s: (s.start, s.end, s.tag))


def test_same_tag_overlaps_merge_and_closes_come_first():
    spans = [Span(start=0, end=6, tag="a"), Span(start=3, end=14, tag="a"), Span(start=14, end=17, tag="b"),
             Span(start=7, end=14, tag="b")]
    tagged = render_tagged(TEXT, spans)
    assert tagged.startswith("<a>Pt was <b>started</a> on</b>")  # touching b spans merge
    _, back = parse_tagged(tagged)
    assert [(s.start, s.end, s.tag) for s in back] == [(0, 14, "a"), (7, 17, "b")]


@pytest.mark.parametrize("bad, why", [
    ("<a>Pt</b> was", "not open"), ("<a>Pt <a>was</a></a>", "already open"), ("<a></a>Pt", "empty"),
    ("<a>Pt was", "unclosed"), ("<zz>Pt</zz>", "unknown tag"),
])
def test_parse_rejects_malformed(bad, why):
    with pytest.raises(TaggedParseError, match=why):
        parse_tagged(bad, ["a", "b"])


def test_word_layout_never_splits_words():
    layout = word_layout("ab cd,ef")
    assert 1 not in layout.open_positions and 1 not in layout.close_positions
    assert {0, 3, 5, 6} <= layout.open_positions
    assert {2, 5, 6, 8} <= layout.close_positions


def test_tokenizer_layout_units_tokenize_canonically(tiny_engine):
    tok = tiny_engine.tokenizer
    layout = tokenizer_layout(TEXT, tok)
    assert "".join(TEXT[a:b] for a, b in layout.units) == TEXT
    for (a, b), ids in zip(layout.units, layout.unit_tokens):
        assert tok(TEXT[a:b], add_special_tokens=False)["input_ids"] == ids
    # rendering gold spans at this layout gives a tokenization equal to the segment-wise one
    tagged = render_tagged(TEXT, [Span(start=7, end=31, tag="drug_decision")], layout)
    assert parse_tagged(tagged)[0] == TEXT
    assert canonical_ids(tagged, tok) == tok(tagged, add_special_tokens=False)["input_ids"]
