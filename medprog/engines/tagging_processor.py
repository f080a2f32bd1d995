"""medprog's own constraint for `TaggedText` on a known tokenizer.

Grammar engines admit *any* tokenization of the copied text, and a regex cannot balance
tags. This automaton admits exactly: the source text in its canonical tokenization (each
segment between tags tokenized on its own, as the tokenizer does at training time), tags
only at the layout's positions, every tag closed, no empty span, no re-opening of a tag
where it just closed, closing tags before opening tags at one position. It runs as a
transformers logits processor over a batch, one automaton per row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from medprog.engines.tagging import TagLayout, word_layout

_TAG_SPLIT = re.compile(r"(</?[A-Za-z_][A-Za-z0-9_]*>)")


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenizer_layout(text: str, tokenizer) -> TagLayout:
    """Tag positions where ``tokenizer`` splits the text anyway, with each unit's tokens.

    A cut is kept only if the pieces on both sides tokenize on their own exactly as they do
    inside the whole text, so any choice of tags leaves the copied tokens canonical.
    """
    n = len(text)
    if n == 0:
        return TagLayout(text=text, opens={}, closes={}, units=[], unit_tokens=[])
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    starts = [a for a, _ in offsets]
    token_at = {a: i for i, a in reversed(list(enumerate(starts)))}
    cand = sorted(p for p in token_at if 0 < p < n and not (text[p - 1].isalnum() and text[p].isalnum()))
    cuts = [0, *cand, n]
    while True:
        pieces = [text[a:b] for a, b in zip(cuts, cuts[1:])]
        alone = tokenizer(pieces, add_special_tokens=False)["input_ids"]
        bad = set()
        for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
            lo = token_at[a] if a in token_at else None
            hi = token_at[b] if b in token_at else len(ids)
            if lo is None or alone[i] != ids[lo:hi]:
                bad.update({a, b})
        bad -= {0, n}
        if not bad:
            break
        cuts = [c for c in cuts if c not in bad]
    local = set(cuts)
    layout = word_layout(text, local)
    piece_tokens = dict(zip(zip(cuts, cuts[1:]), alone))
    unit_tokens = []
    for a, b in layout.units:
        toks, p = [], a
        while p < b:
            q = cuts[cuts.index(p) + 1]
            toks.extend(piece_tokens[(p, q)])
            p = q
        unit_tokens.append(toks)
    return TagLayout(text=text, opens=layout.opens, closes=layout.closes, units=layout.units,
                     unit_tokens=unit_tokens)


def canonical_ids(tagged: str, tokenizer) -> list[int]:
    """Token ids of a tagged text as training sees it: each segment between tags on its own."""
    out: list[int] = []
    for part in _TAG_SPLIT.split(tagged):
        if part:
            out.extend(_encode(tokenizer, part))
    return out


@dataclass
class TagAutomaton:
    """Decoding state for one row: which tokens may come next."""

    layout: TagLayout
    open_ids: dict[str, list[int]]
    close_ids: dict[str, list[int]]
    eos_id: int
    unit: int = 0
    offset: int = 0  # token index within the current unit
    pending: list[int] = field(default_factory=list)  # rest of a multi-token tag
    open_tags: set[str] = field(default_factory=set)
    opened_here: set[str] = field(default_factory=set)
    closed_here: set[str] = field(default_factory=set)
    done: bool = False

    def __post_init__(self) -> None:
        self._opens = self.layout.open_positions
        self._closes = self.layout.close_positions
        self._first = {}
        for tag, seq in self.open_ids.items():
            self._first[seq[0]] = ("open", tag)
        for tag, seq in self.close_ids.items():
            self._first[seq[0]] = ("close", tag)
        if len(self._first) != len(self.open_ids) + len(self.close_ids):
            raise ValueError("tag token sequences must start with distinct tokens")

    def max_tokens(self) -> int:
        """A bound on the completion length: the copied text plus, at every tag position, every
        tag closing and opening once, and the end-of-turn token — so a completion can always finish."""
        tag_tokens = sum(len(s) for s in [*self.open_ids.values(), *self.close_ids.values()])
        return sum(map(len, self.layout.unit_tokens)) + (len(self.layout.units) + 1) * tag_tokens + 1

    def _position(self) -> int:
        units = self.layout.units
        return units[self.unit][0] if self.unit < len(units) else len(self.layout.text)

    def allowed(self) -> list[int]:
        if self.done:
            return [self.eos_id]
        if self.pending:
            return [self.pending[0]]
        units = self.layout.unit_tokens
        if self.offset > 0:
            return [units[self.unit][self.offset]]
        pos, at_end = self._position(), self.unit >= len(units)
        out = []
        if not self.opened_here and (pos in self._closes or at_end):
            out += [self.close_ids[t][0] for t in sorted(self.open_tags - self.opened_here)]
        if pos in self._opens and not at_end:
            out += [self.open_ids[t][0] for t in sorted(self.open_ids)
                    if t not in self.open_tags and t not in self.closed_here]
        if at_end:
            if not self.open_tags:
                out.append(self.eos_id)
        else:
            out.append(units[self.unit][0])
        return out

    def advance(self, token: int) -> None:
        if self.done:
            return
        if self.pending:
            self.pending.pop(0)
            return
        units = self.layout.unit_tokens
        if self.offset == 0 and token in self._first and token not in (
                units[self.unit][:1] if self.unit < len(units) else []):
            kind, tag = self._first[token]
            seq = (self.open_ids if kind == "open" else self.close_ids)[tag]
            self.pending = list(seq[1:])
            if kind == "open":
                self.open_tags.add(tag)
                self.opened_here.add(tag)
            else:
                self.open_tags.discard(tag)
                self.closed_here.add(tag)
            return
        if self.unit >= len(units):
            self.done = token == self.eos_id or self.done
            return
        self.offset += 1
        if self.offset == len(units[self.unit]):
            self.unit, self.offset = self.unit + 1, 0
            self.opened_here, self.closed_here = set(), set()


def tag_token_ids(tokenizer, tags: list[str]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    opens = {t: _encode(tokenizer, f"<{t}>") for t in tags}
    closes = {t: _encode(tokenizer, f"</{t}>") for t in tags}
    return opens, closes


def automaton_for(text: str, tags: list[str], tokenizer, eos_id: int) -> TagAutomaton:
    """The tagging automaton for ``text`` on ``tokenizer`` (inference and training share it)."""
    opens, closes = tag_token_ids(tokenizer, tags)
    return TagAutomaton(tokenizer_layout(text, tokenizer), opens, closes, eos_id)


class TaggingLogitsProcessor:
    """A transformers logits processor running one `TagAutomaton` per batch row."""

    def __init__(self, automata: list[TagAutomaton], prompt_length: int) -> None:
        self.automata = automata
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] > self.prompt_length:
            for automaton, token in zip(self.automata, input_ids[:, -1].tolist()):
                automaton.advance(token)
        rows, cols = [], []
        for r, automaton in enumerate(self.automata):
            allowed = automaton.allowed()
            rows.extend([r] * len(allowed))
            cols.extend(allowed)
        mask = torch.full_like(scores, float("-inf"))
        mask[rows, cols] = 0.0
        return scores + mask
