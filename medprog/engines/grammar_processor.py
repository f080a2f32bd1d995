"""JSON-schema and choice constraints through llguidance matchers, one per batch row, masking in place.

llguidance compiles a schema lazily (about 1 ms per schema the programs declare, at a 129k
vocabulary) and computes each mask in about 0.1 ms; its JSON strings are strict (no raw
control characters) and ``whitespace_flexible: False`` leaves no free whitespace. Driving the
matchers directly avoids the per-step overhead of outlines' wrapper (measured at 0.12x
unconstrained speed on the tiny model) and ``llguidance.torch``'s import (~2 s of torch.compile
set-up per process). On SmolLM2 at batch 8 a step's masking costs ~1 ms of a ~90 ms step.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import torch

JSON_DEFAULTS: Any = {"whitespace_flexible": False}  # llguidance's JsonCompileOptions


@lru_cache(maxsize=256)
def json_grammar(schema_json: str) -> str:
    """The llguidance grammar for a JSON schema (compact, strict strings); cached per schema."""
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(json.loads(schema_json), defaults=JSON_DEFAULTS)


@lru_cache(maxsize=256)
def choice_grammar(choices: tuple[str, ...]) -> str:
    """The llguidance grammar admitting exactly one of ``choices``."""
    import llguidance

    return llguidance.grammar_from("regex", "|".join(re.escape(c) for c in choices))


def ll_tokenizer(tokenizer: Any, n_vocab: int) -> Any:
    """llguidance's view of a transformers fast tokenizer, sized to the model's logits.

    As ``llguidance.hf.from_tokenizer`` does, but the Rust tokenizer is copied (to drop padding and
    truncation before serializing it) only when it has either set: the copy is 0.65 s of the 2.1 s
    the view took at the 129k DeepSeek vocabulary. llguidance cannot serialize the view, so it is
    built once per process and engine (0.25 s at 49k, 0.9-1.3 s at 129k).
    """
    import llguidance

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("llguidance needs a fast (Rust) tokenizer")
    if backend.padding is not None or backend.truncation is not None:
        backend = copy.copy(backend)
        backend.no_padding()
        backend.no_truncation()
    return llguidance.LLTokenizer(backend.to_str(), n_vocab=max(n_vocab, len(tokenizer)),
                                  eos_token=tokenizer.eos_token_id)


class MatcherCache:
    """One matcher per grammar for one tokenizer view, compiled once and copied for every batch row.

    llguidance compiles a grammar's lexer and parser tables lazily, during the first masks; a fresh
    matcher per row paid that again on every call (8 rows of a program schema at 49k: 4-10 ms), a
    copy of the kept matcher starts with the tables built (0.2-0.3 ms for 8 rows). The kept
    matchers never consume a token. Least recently used grammars are dropped past ``size``.
    """

    def __init__(self, ll_tok: Any, size: int = 256) -> None:
        self.ll_tok = ll_tok
        self.size = size
        self.compiled = 0
        self._kept: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        words = (ll_tok.vocab_size + 31) // 32
        self._scratch = torch.empty(words, dtype=torch.int32)

    def matchers(self, grammars: list[str]) -> list[Any]:
        """A fresh matcher in its start state for each grammar; a grammar that does not compile raises."""
        with self._lock:  # copying and warming the kept matchers must not overlap
            return [self._kept_for(g).deep_copy() for g in grammars]

    def _kept_for(self, grammar: str) -> Any:
        import llguidance

        kept = self._kept.get(grammar)
        if kept is None:
            kept = llguidance.LLMatcher(self.ll_tok, grammar, log_level=0)
            if kept.is_error():
                raise ValueError(f"grammar does not compile: {kept.get_error()}")
            kept.unsafe_compute_mask_ptr(self._scratch.data_ptr(), self._scratch.numel() * 4)  # builds the tables
            self.compiled += 1
            self._kept[grammar] = kept
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        self._kept.move_to_end(grammar)
        return kept


class GrammarLogitsProcessor:
    """A transformers logits processor running one llguidance matcher per batch row.

    Rows whose matcher has stopped (the end token was sampled) or failed are left
    unconstrained: generation has finished for them and their scores are ignored.
    """

    def __init__(self, ll_tok: Any, grammars: list[str], prompt_length: int,
                 cache: MatcherCache | None = None) -> None:
        """Matchers for ``grammars`` (copies from ``cache`` when given: it must be ``ll_tok``'s)."""
        self.matchers = (cache or MatcherCache(ll_tok, size=len(grammars))).matchers(grammars)
        self.prompt_length = prompt_length
        # llguidance.torch's layout (one int32 word per 32 tokens); importing that module costs ~2 s of
        # torch.compile set-up per process, for a kernel and checks medprog does not use
        self.bitmask = torch.full((len(grammars), (ll_tok.vocab_size + 31) // 32), -1, dtype=torch.int32)
        self._row_bytes = self.bitmask.shape[1] * self.bitmask.element_size()
        self.live = [True] * len(grammars)
        xgrammar_kernel()  # its import (~0.5 s, once) belongs to building, not to the first step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        """Masks ``scores`` in place (they are this step's own copy of the logits) and returns them."""
        if input_ids.shape[1] > self.prompt_length:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if self.live[row]:
                    m = self.matchers[row]
                    self.live[row] = not m.is_stopped() and m.consume_token(token) and not m.is_error()
        start = self.bitmask.data_ptr()
        for row, m in enumerate(self.matchers):  # llguidance.torch.fill_next_token_bitmask, less its checks
            if self.live[row]:
                m.unsafe_compute_mask_ptr(start + row * self._row_bytes, self._row_bytes)
            else:
                self.bitmask[row].fill_(-1)
        return apply_bitmask_(scores, self.bitmask)


_BITS = torch.arange(32, dtype=torch.int32)
SPARSE_WORDS = 1 / 16
"""A row whose nonzero mask words are under this share of its words is masked by `_apply_sparse`..."""
SPARSE_MIN_WORDS = 512
"""...at vocabularies of 16k tokens or more; below, its fixed cost (~0.05 ms) exceeds the kernel's."""


def apply_bitmask_(scores: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """``scores`` with every token whose bit is 0 set to -inf, in place (bit ``i`` of word ``j`` is
    token ``32j+i``; tokens past the mask are -inf, as in llguidance's own kernel).

    Rows admitting a few tokens (JSON punctuation, keys, enums) are filled with -inf and the admitted
    scores put back; the others go through xgrammar's C++ kernel (same bit layout, fast on all-ones
    words, slow where it writes most of the row) where installed, else plain torch. llguidance's
    own kernel is ``torch.compile``d, which costs seconds on first use.
    """
    bitmask = bitmask.to(scores.device)
    covered = 32 * bitmask.shape[1]
    if scores.shape[1] > covered:
        scores[:, covered:] = float("-inf")
    sparse = []
    if bitmask.shape[1] >= SPARSE_MIN_WORDS:
        nonzero_words = torch.count_nonzero(bitmask, dim=1).tolist()
        sparse = [row for row, n in enumerate(nonzero_words) if n < SPARSE_WORDS * bitmask.shape[1]]
        if sparse:
            _apply_sparse(scores, bitmask, torch.tensor(sparse))
    if len(sparse) < bitmask.shape[0]:
        _apply_dense(scores, bitmask, [row for row in range(bitmask.shape[0]) if row not in sparse])
    return scores


def _apply_sparse(scores: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor) -> None:
    """Mask ``rows``: keep the admitted scores, fill the rows with -inf, put the kept ones back."""
    row, word = bitmask[rows].nonzero(as_tuple=True)
    tokens = word.unsqueeze(-1) * 32 + _BITS
    admitted = (((bitmask[rows[row], word].unsqueeze(-1) >> _BITS) & 1) == 1) & (tokens < scores.shape[1])
    at_row = rows[row].unsqueeze(-1).expand_as(tokens)[admitted]
    at_token = tokens[admitted]
    kept = scores[at_row, at_token]
    scores.index_fill_(0, rows, float("-inf"))
    scores[at_row, at_token] = kept


def _apply_dense(scores: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    kernel = xgrammar_kernel()
    if kernel is not None:
        every = len(rows) == scores.shape[0]
        kernel(scores, bitmask, vocab_size=min(scores.shape[1], 32 * bitmask.shape[1]), indices=None if every else rows)
        return
    words = bitmask[rows]
    allowed = ((words.unsqueeze(-1) >> _BITS) & 1).view(words.shape[0], -1)[:, : scores.shape[1]]
    scores[rows] = scores[rows].masked_fill(allowed == 0, float("-inf"))


@lru_cache(maxsize=1)
def xgrammar_kernel() -> Any:
    """xgrammar's in-place bitmask kernel, or None where xgrammar is not installed (imported once)."""
    try:
        import xgrammar
    except ImportError:
        return None
    return xgrammar.apply_token_bitmask_inplace
