"""Inline XML tagging: the representation behind `TaggedText`.

A tagged text is the source text with ``<tag>`` and ``</tag>`` inserted at character
positions. Spans of *different* tags may overlap or cross (``<a>x <b>y</a> z</b>``);
a tag never nests inside itself, so overlapping gold spans of one tag are merged.
At one position all closing tags come before any opening tag; closing tags close the
most recently opened span first, and of two spans opening together the longer opens
first. That ordering makes `render_tagged` a function: one span set, one string.

Where a tag may sit is given by a `TagLayout`: word boundaries of the text, snapped
across whitespace to a position where the tokenizer splits the text anyway (so tags
never change how the surrounding words tokenize). Without a tokenizer, tags sit
directly against the words they enclose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import BaseModel, PositiveInt

_TAG_RE = re.compile(r"</?([A-Za-z_][A-Za-z0-9_]*)>")


class Span(BaseModel):
    """A labelled half-open character range ``[start, end)`` of a text."""

    start: int
    end: int
    tag: str


class TagLimits(BaseModel):
    """Optional bounds on the spans a decode may write (e.g. the extremes seen in training data).

    ``None`` leaves a bound off. Lengths count layout units (the stretches between tag positions).
    ``max_span_units`` closes a span at the first closing position at or past the bound.
    """

    max_opens_per_position: PositiveInt | None = None
    max_open: PositiveInt | None = None
    min_span_units: PositiveInt | None = None
    max_span_units: PositiveInt | None = None


class TaggedParseError(ValueError):
    """A tagged string that is not a well-formed tagging of its source."""


_WORD_OR_MARK = re.compile(r"[^\W_]+|\S")
"""A run of alphanumerics (``str.isalnum``), or any other single non-space character."""


def word_starts(text: str) -> list[int]:
    """Positions where a span may begin: a non-space char that does not continue a word."""
    return [m.start() for m in _WORD_OR_MARK.finditer(text)]


def word_ends(text: str) -> list[int]:
    """Positions where a span may end: after a non-space char that is not followed by more of its word."""
    return [m.end() for m in _WORD_OR_MARK.finditer(text)]


@dataclass(frozen=True)
class TagLayout:
    """Where tags may go in one text.

    ``opens[s]`` / ``closes[e]`` map a span start / end to the character position its tag
    is written at (equal to ``s`` / ``e`` unless the tokenizer forces a snap across
    whitespace). ``units`` cut the text at every tag position; with a tokenizer,
    ``unit_tokens[i]`` is the canonical tokenization of ``units[i]``.
    """

    text: str
    opens: dict[int, int]
    closes: dict[int, int]
    units: list[tuple[int, int]] = field(default_factory=list)
    unit_tokens: list[list[int]] = field(default_factory=list)

    @property
    def open_positions(self) -> set[int]:
        return set(self.opens.values())

    @property
    def close_positions(self) -> set[int]:
        return set(self.closes.values())


def _snap(pos: int, text: str, allowed: set[int], direction: int) -> int | None:
    """Nearest allowed position from ``pos`` moving over whitespace in ``direction``."""
    p = pos
    while True:
        if p in allowed:
            return p
        nxt = p + direction
        ch_index = p - 1 if direction < 0 else p
        if not (0 <= ch_index < len(text)) or not text[ch_index].isspace() or not (0 <= nxt <= len(text)):
            return None
        p = nxt


def word_layout(text: str, local: set[int] | None = None) -> TagLayout:
    """Layout from word boundaries; ``local`` restricts tag positions (tokenizer boundaries)."""
    starts, ends = word_starts(text), word_ends(text)
    if local is None:
        opens = {s: s for s in starts}
        closes = {e: e for e in ends}
    else:
        opens = {s: p for s in starts if (p := s if s in local else _snap(s, text, local, -1)) is not None}
        closes = {e: p for e in ends if (p := e if e in local else _snap(e, text, local, +1)) is not None}
    cuts = sorted({0, len(text)} | set(opens.values()) | set(closes.values()))
    units = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
    return TagLayout(text=text, opens=opens, closes=closes, units=units)


def merge_same_tag(spans: list[Span]) -> list[Span]:
    """Merge overlapping or touching spans of one tag: a tag never nests in itself or re-opens where it closed."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.tag, s.start, s.end)):
        if out and out[-1].tag == s.tag and s.start <= out[-1].end:
            out[-1] = Span(start=out[-1].start, end=max(out[-1].end, s.end), tag=s.tag)
        else:
            out.append(s)
    return out


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def place_spans(spans: list[Span], layout: TagLayout) -> list[Span]:
    """Move each span's edges to where the layout can write its tags (widening, never shrinking).

    Returns spans whose ``start``/``end`` are *tag positions*. A span that cannot be placed
    (no allowed position at or outside its edges) is dropped.
    """
    text = layout.text
    open_keys, close_keys = sorted(layout.opens), sorted(layout.closes)
    placed = []
    for s in spans:
        a, b = _strip(text, s.start, s.end)
        if a >= b:
            continue
        start = next((layout.opens[k] for k in reversed(open_keys) if k <= a), None)
        end = next((layout.closes[k] for k in close_keys if k >= b), None)
        if start is None or end is None or start >= end:
            continue
        placed.append(Span(start=start, end=end, tag=s.tag))
    return placed


def render_tagged(text: str, spans: list[Span], layout: TagLayout | None = None) -> str:
    """Gold spans → tagged text, tags at the positions the layout allows."""
    layout = layout or word_layout(text)
    spans = merge_same_tag(place_spans(merge_same_tag(spans), layout))
    events: dict[int, tuple[list[Span], list[Span]]] = {}
    for s in spans:
        events.setdefault(s.start, ([], []))[1].append(s)
        events.setdefault(s.end, ([], []))[0].append(s)
    out: list[str] = []
    prev, open_stack = 0, list[str]()
    for pos in sorted(events):
        closing, opening = events[pos]
        out.append(text[prev:pos])
        # close most recently opened first
        for s in sorted(closing, key=lambda s: -open_stack.index(s.tag)):
            out.append(f"</{s.tag}>")
            open_stack.remove(s.tag)
        for s in sorted(opening, key=lambda s: (-s.end, s.tag)):
            out.append(f"<{s.tag}>")
            open_stack.append(s.tag)
        prev = pos
    out.append(text[prev:])
    return "".join(out)


def parse_tagged(tagged: str, tags: list[str] | None = None) -> tuple[str, list[Span]]:
    """Tagged text → (plain text, spans with exact character offsets into the plain text).

    Raises `TaggedParseError` on an unknown tag, a closing tag with no open span, a tag
    opened twice, an empty span, or a span left open. Span edges are stripped of whitespace.
    """
    text_parts: list[str] = []
    spans: list[tuple[int, int, str]] = []
    open_at: dict[str, int] = {}
    pos, last = 0, 0
    for m in _TAG_RE.finditer(tagged):
        piece = tagged[last:m.start()]
        text_parts.append(piece)
        pos += len(piece)
        last = m.end()
        name, closing = m.group(1), m.group(0).startswith("</")
        if tags is not None and name not in tags:
            raise TaggedParseError(f"unknown tag <{name}> at character {m.start()}; allowed: {', '.join(tags)}")
        if closing:
            if name not in open_at:
                raise TaggedParseError(f"</{name}> at character {m.start()} closes a span that is not open")
            start = open_at.pop(name)
            if start == pos:
                raise TaggedParseError(f"empty <{name}> span at character {m.start()}")
            spans.append((start, pos, name))
        else:
            if name in open_at:
                raise TaggedParseError(f"<{name}> at character {m.start()} opened while already open")
            open_at[name] = pos
    text_parts.append(tagged[last:])
    if open_at:
        raise TaggedParseError(f"unclosed tag(s): {', '.join(sorted(open_at))}")
    text = "".join(text_parts)
    out = []
    for a, b, name in spans:
        a, b = _strip(text, a, b)
        if a < b:
            out.append(Span(start=a, end=b, tag=name))
    out.sort(key=lambda s: (s.start, s.end, s.tag))
    return text, out


def strip_tags(tagged: str) -> str:
    """The text with every tag-shaped substring removed."""
    return _TAG_RE.sub("", tagged)
