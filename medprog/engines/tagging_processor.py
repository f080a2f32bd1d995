"""medprog's own constraint for `TaggedText` on a known tokenizer.

Grammar engines admit *any* tokenization of the copied text, and a regex cannot balance
tags. This automaton admits exactly: the source text in its canonical tokenization (each
segment between tags tokenized on its own, as the tokenizer does at training time), tags
only at the layout's positions, every tag closed, no empty span, no re-opening of a tag
where it just closed, closing tags before opening tags at one position. It runs as a
transformers logits processor over a batch, one automaton per row.

Tags may be single added tokens or several ordinary ones sharing a prefix (SmolLM2 writes
``<drug_decision>`` as ``<``, ``drug``, ``_``, ``decision``, ``>``): the automaton walks a
trie of tag token sequences, and where a tag's first token is also the next token of the
copied text it follows both readings (`Branch`) until the tokens tell them apart.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from medprog.engines.tagging import TagLayout, TagLimits, word_layout

_TAG_SPLIT = re.compile(r"(</?[A-Za-z_][A-Za-z0-9_]*>)")


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


_PIECES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PIECE_CACHE_LIMIT = 200_000


def _encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of several texts, each tokenized on its own; remembered per tokenizer, since
    notes repeat most of their pieces (a 20,000-character note: ~3,000 pieces, ~750 distinct)."""
    cache = _PIECES.setdefault(tokenizer, {})
    if len(cache) > _PIECE_CACHE_LIMIT:
        cache.clear()
    todo = list(dict.fromkeys(t for t in texts if t not in cache))
    if todo:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            fresh = tokenizer(todo, add_special_tokens=False)["input_ids"]
        else:
            fresh = [e.ids for e in backend.encode_batch_fast(todo, add_special_tokens=False)]
        cache.update(zip(todo, fresh))
    return [cache[t] for t in texts]


def tokenizer_layout(text: str, tokenizer) -> TagLayout:
    """Tag positions where ``tokenizer`` splits the text anyway, with each unit's tokens.

    A cut is kept only if the pieces on both sides tokenize on their own exactly as they do
    inside the whole text, so any choice of tags leaves the copied tokens canonical. Pieces
    are tokenized once; after dropping a bad cut only the merged pieces are tokenized again.
    """
    n = len(text)
    if n == 0:
        return TagLayout(text=text, opens={}, closes={}, units=[], unit_tokens=[])
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        enc = backend.encode(text, add_special_tokens=False)
        ids, offsets = enc.ids, enc.offsets
    else:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
    token_at = {a: i for i, (a, _) in reversed(list(enumerate(offsets)))}  # first token starting at a
    cand = sorted(p for p in token_at if 0 < p < n and not (text[p - 1].isalnum() and text[p].isalnum()))
    cuts = [0, *cand, n]
    alone: dict[tuple[int, int], list[int]] = {}
    while True:
        pieces = [(a, b) for a, b in zip(cuts, cuts[1:]) if (a, b) not in alone]
        alone.update(zip(pieces, _encode_many(tokenizer, [text[a:b] for a, b in pieces])))
        bad = set()
        for a, b in pieces:
            if a not in token_at or alone[(a, b)] != ids[token_at[a]:token_at.get(b, len(ids))]:
                bad.update({a, b})
        bad -= {0, n}
        if not bad:
            break
        cuts = [c for c in cuts if c not in bad]
    layout = word_layout(text, set(cuts))
    unit_tokens = [ids[token_at[a]:token_at.get(b, len(ids))] for a, b in layout.units]
    return TagLayout(text=text, opens=layout.opens, closes=layout.closes, units=layout.units,
                     unit_tokens=unit_tokens)


def canonical_ids(tagged: str, tokenizer) -> list[int]:
    """Token ids of a tagged text as training sees it: each segment between tags on its own."""
    out: list[int] = []
    for part in _TAG_SPLIT.split(tagged):
        if part:
            out.extend(_encode(tokenizer, part))
    return out


class Branch(NamedTuple):
    """One reading of the tokens so far: where the copy stands, the open spans, a tag half written."""

    unit: int
    offset: int  # token index within the current unit
    prefix: tuple[int, ...]  # tokens of a tag written so far
    open_at: frozenset[tuple[str, int]]  # (tag, unit it opened at)
    opened_here: frozenset[str]
    closed_here: frozenset[str]


@dataclass
class TagAutomaton:
    """Decoding state for one row: which tokens may come next."""

    layout: TagLayout
    open_ids: dict[str, list[int]]
    close_ids: dict[str, list[int]]
    eos_id: int
    limits: TagLimits = field(default_factory=TagLimits)
    branches: list[Branch] = field(default_factory=lambda: [Branch(0, 0, (), frozenset(), frozenset(), frozenset())])
    done: bool = False

    def __post_init__(self) -> None:
        self._opens = self.layout.open_positions
        self._closes = self.layout.close_positions
        self._units = self.layout.unit_tokens
        self._unit_pos = [a for a, _ in self.layout.units]
        self._close_seqs = [(t, tuple(self.close_ids[t])) for t in sorted(self.close_ids)]
        self._open_seqs = [(t, tuple(self.open_ids[t])) for t in sorted(self.open_ids)]
        if any(not seq for _, seq in [*self._close_seqs, *self._open_seqs]):
            raise ValueError("every tag must encode to at least one token")

    def max_tokens(self) -> int:
        """A bound on the completion length: the copied text plus, at every tag position, every
        tag closing and opening once, and the end-of-turn token — so a completion can always finish."""
        tag_tokens = sum(len(s) for s in [*self.open_ids.values(), *self.close_ids.values()])
        return sum(map(len, self._units)) + (len(self._units) + 1) * tag_tokens + 1

    # which tags a branch may write at its position --------------------------------------
    def _closings(self, b: Branch) -> list[tuple[bool, str, tuple[int, ...]]]:
        """Closing tags this branch may write now (all closes come before any open at a position)."""
        at_end = b.unit >= len(self._units)
        pos = len(self.layout.text) if at_end else self._unit_pos[b.unit]
        if b.opened_here or not (at_end or pos in self._closes):
            return []
        short = self.limits.min_span_units or 0
        return [(False, t, seq) for t, seq in self._close_seqs
                if any(o == t and (at_end or b.unit - u >= short) for o, u in b.open_at)]

    def _must_close(self, b: Branch, closes: list) -> bool:
        """A span has reached ``max_span_units`` and may close here: nothing else may be written."""
        cap = self.limits.max_span_units
        closable = {t for _, t, _ in closes}
        return cap is not None and any(t in closable and b.unit - u >= cap for t, u in b.open_at)

    def _tags(self, b: Branch) -> tuple[list[tuple[bool, str, tuple[int, ...]]], bool]:
        """(is_open, tag, token sequence) for every tag this branch may write now, and whether it must close."""
        closes, lim = self._closings(b), self.limits
        if self._must_close(b, closes):
            return closes, True
        if b.unit >= len(self._units) or self._unit_pos[b.unit] not in self._opens \
                or len(self._units) - b.unit < max(lim.min_span_units or 0, 1) \
                or len(b.opened_here) >= (lim.max_opens_per_position or 1 << 30) \
                or len(b.open_at) >= (lim.max_open or 1 << 30):
            return closes, False
        names = {o for o, _ in b.open_at}
        return closes + [(True, t, seq) for t, seq in self._open_seqs if t not in names and t not in b.closed_here], False

    def _next(self, b: Branch) -> list[int]:
        if b.offset > 0:
            return [self._units[b.unit][b.offset]]
        tags, must_close = self._tags(b)
        k = len(b.prefix)
        out = [seq[k] for _, _, seq in tags if len(seq) > k and seq[:k] == b.prefix]
        if b.prefix or must_close:
            return out
        if b.unit >= len(self._units):
            return out if b.open_at else [*out, self.eos_id]
        return [*out, self._units[b.unit][0]]

    def allowed(self) -> list[int]:
        if self.done:
            return [self.eos_id]
        if len(self.branches) == 1:
            return list(dict.fromkeys(self._next(self.branches[0])))
        return list(dict.fromkeys(t for b in self.branches for t in self._next(b)))

    # moving on ----------------------------------------------------------------------------
    def _write_tag(self, b: Branch, token: int) -> list[Branch]:
        prefix, out = (*b.prefix, token), []
        for opened, tag, seq in self._tags(b)[0]:
            if seq[:len(prefix)] != prefix:
                continue
            if len(seq) > len(prefix):
                out.append(b._replace(prefix=prefix))
            elif opened:
                out.append(b._replace(prefix=(), open_at=b.open_at | {(tag, b.unit)},
                                      opened_here=b.opened_here | {tag}))
            else:
                out.append(b._replace(prefix=(), open_at=frozenset(x for x in b.open_at if x[0] != tag),
                                      closed_here=b.closed_here | {tag}))
        return out

    def _step(self, b: Branch, token: int) -> list[Branch]:
        out = self._write_tag(b, token) if b.prefix or b.offset == 0 else []
        if b.prefix or b.unit >= len(self._units) or token != self._units[b.unit][b.offset]:
            return out
        if b.offset == 0 and self._tags(b)[1]:
            return out
        if b.offset + 1 < len(self._units[b.unit]):
            return [*out, b._replace(offset=b.offset + 1)]
        return [*out, b._replace(unit=b.unit + 1, offset=0, opened_here=frozenset(), closed_here=frozenset())]

    def advance(self, token: int) -> None:
        if self.done:
            return
        if token == self.eos_id and any(b.unit >= len(self._units) and not b.open_at and not b.prefix
                                        for b in self.branches):
            self.done = True
            return
        nxt = list(dict.fromkeys(s for b in self.branches for s in self._step(b, token)))
        if not nxt:
            raise ValueError(f"token {token} is outside the tagging constraint")
        self.branches = nxt


def tag_token_ids(tokenizer, tags: list[str]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    opens = {t: _encode(tokenizer, f"<{t}>") for t in tags}
    closes = {t: _encode(tokenizer, f"</{t}>") for t in tags}
    return opens, closes


def automaton_for(text: str, tags: list[str], tokenizer, eos_id: int, limits: TagLimits | None = None) -> TagAutomaton:
    """The tagging automaton for ``text`` on ``tokenizer`` (inference and training share it)."""
    opens, closes = tag_token_ids(tokenizer, tags)
    return TagAutomaton(tokenizer_layout(text, tokenizer), opens, closes, eos_id, limits or TagLimits())


class TaggingLogitsProcessor:
    """A transformers logits processor running one `TagAutomaton` per batch row."""

    def __init__(self, automata: list[TagAutomaton], prompt_length: int) -> None:
        self.automata = automata
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        if input_ids.shape[1] > self.prompt_length:
            for automaton, token in zip(self.automata, input_ids[:, -1].tolist()):
                automaton.advance(token)
        rows, cols = [], []
        for r, automaton in enumerate(self.automata):
            allowed = automaton.allowed()
            rows.extend([r] * len(allowed))
            cols.extend(allowed)
        out = torch.full_like(scores, float("-inf"))
        out[rows, cols] = scores[rows, cols]
        return out
