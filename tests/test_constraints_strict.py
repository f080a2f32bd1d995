"""JSON constraints stay strict JSON against a model that *wants* to break them.

A bias processor pushes up every token holding whitespace or a control character, so a
backend whose strings admit raw control characters, or whose grammar admits free
whitespace, is caught at once (``json.loads`` is strict about control characters).
"""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest
import torch
from transformers import LogitsProcessorList

import medprog.signatures as signatures_pkg
from medprog.engines.constraints import JsonConstraint, constraint_for, json_whitespace_free, output_mode
from medprog.engines.grammar_processor import GrammarLogitsProcessor, json_grammar, ll_tokenizer
from medprog.signatures import Signature


def json_signatures() -> list[type]:
    """Every declared Signature whose output is constrained as JSON."""
    found = {}
    for mod in pkgutil.iter_modules(signatures_pkg.__path__):
        for obj in vars(importlib.import_module(f"medprog.signatures.{mod.name}")).values():
            if isinstance(obj, type) and issubclass(obj, Signature) and obj is not Signature and obj.output_fields:
                if output_mode(obj) == "json":
                    found[obj.__qualname__] = obj
    return [found[k] for k in sorted(found)]


class PreferWhitespace:
    """Adds a large bonus to every token whose text holds whitespace, a larger one for control characters."""

    def __init__(self, tokenizer, vocab: int) -> None:
        self.bonus = torch.zeros(vocab)
        for i in range(len(tokenizer)):
            text = tokenizer.decode([i])
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
                self.bonus[i] = 40.0
            elif any(ch.isspace() for ch in text):
                self.bonus[i] = 30.0

    def __call__(self, input_ids, scores):
        return scores + self.bonus[: scores.shape[1]]


def strictness_error(text: str) -> str | None:
    """The first raw control character inside a string or whitespace outside one (a prefix is fine)."""
    in_string = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif in_string:
            if ord(ch) < 32 or ord(ch) == 127:
                return f"raw control character {ch!r} inside a string at {i}"
            escaped, in_string = ch == "\\", ch != '"'
        elif ch == '"':
            in_string = True
        elif ch.isspace():
            return f"whitespace outside strings at {i}"
    return None


def prompt_ids(tokenizer) -> list[int]:
    return tokenizer("note:", add_special_tokens=False)["input_ids"]


def generate(engine, processors: list, n: int = 4, max_new: int = 160) -> list[tuple[str, bool]]:
    """Sampled completions with whether each finished (emitted the end token)."""
    tok, model = engine.tokenizer, engine.model
    prompt = torch.tensor([prompt_ids(tok)] * n)
    torch.manual_seed(0)
    with torch.inference_mode():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new,
                             do_sample=True, top_k=0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             logits_processor=LogitsProcessorList(processors))
    texts = []
    for row in out[:, prompt.shape[1]:].tolist():
        finished = tok.eos_token_id in row
        texts.append((tok.decode(row[: row.index(tok.eos_token_id)] if finished else row), finished))
    return texts


def test_the_bias_alone_produces_control_characters(tiny_engine):
    """The adversary is real: unconstrained, it writes whitespace and control characters."""
    bias = PreferWhitespace(tiny_engine.tokenizer, tiny_engine.model.config.vocab_size)
    texts = generate(tiny_engine, [bias], max_new=20)
    assert all(strictness_error('"' + t) for t, _ in texts)


@pytest.mark.slow
@pytest.mark.parametrize("sig", json_signatures(), ids=lambda s: s.__name__)
def test_json_outputs_are_strict_and_compact_under_pressure(sig, tiny_engine, monkeypatch):
    monkeypatch.setattr("medprog.engines.constraints.MAX_STRING_CHARS", 24)
    monkeypatch.setattr("medprog.engines.constraints.MAX_LIST_ITEMS", 2)
    c = constraint_for(sig, {name: "x" for name in sig.input_fields})
    assert isinstance(c, JsonConstraint)
    vocab = tiny_engine.model.config.vocab_size
    grammar = json_grammar(json_whitespace_free(c.json_schema))
    processor = GrammarLogitsProcessor(ll_tokenizer(tiny_engine.tokenizer, vocab), [grammar] * 2,
                                       len(prompt_ids(tiny_engine.tokenizer)))
    outputs = generate(tiny_engine, [PreferWhitespace(tiny_engine.tokenizer, vocab), processor], n=2, max_new=240)
    for text, finished in outputs:
        assert strictness_error(text) is None, text
        if finished:
            json.loads(text)


@pytest.mark.parametrize("with_xgrammar", [True, False])
@pytest.mark.parametrize("density", ["dense", "sparse", "mixed"])
def test_apply_bitmask_matches_the_bit_layout(with_xgrammar, density, monkeypatch):
    """Bit ``i`` of word ``j`` admits token ``32j+i`` (in place; past the mask nothing), on rows masked
    sparsely (few nonzero words), densely (xgrammar's kernel or plain torch), or both in one batch."""
    from medprog.engines.grammar_processor import apply_bitmask_, xgrammar_kernel

    kernel = xgrammar_kernel()
    if not with_xgrammar:
        monkeypatch.setattr("medprog.engines.grammar_processor.xgrammar_kernel", lambda: None)
    elif kernel is None:
        pytest.skip("xgrammar is not installed")
    monkeypatch.setattr("medprog.engines.grammar_processor.SPARSE_MIN_WORDS", 8)  # a small mask takes both paths
    gen = torch.Generator().manual_seed(0)
    bitmask = torch.randint(-(2**31), 2**31 - 1, (3, 40), dtype=torch.int32, generator=gen)
    if density != "dense":
        keep = torch.zeros(40, dtype=torch.int32)
        keep[[3, 31]] = -1  # 2 of 40 words nonzero: the sparse path
        sparse_rows = [0, 1, 2] if density == "sparse" else [1]
        bitmask[sparse_rows] &= keep
        bitmask[sparse_rows[0], 31] = -(2**31)  # the sign bit alone: token 32*31+31
    scores = torch.randn(3, 1250, generator=gen)
    before = scores.clone()
    out = apply_bitmask_(scores, bitmask)
    assert out is scores
    for row in range(3):
        for token in range(1250):
            admitted = token < 1280 and (int(bitmask[row, min(token // 32, 39)]) >> (token % 32)) & 1
            assert torch.isfinite(out[row, token]).item() == bool(admitted), (row, token)
            if admitted:
                assert out[row, token] == before[row, token]


def test_apply_bitmask_masks_logits_past_the_mask():
    """Logits wider than the mask (a padded model vocabulary) are -inf past it."""
    from medprog.engines.grammar_processor import apply_bitmask_

    scores = torch.zeros(2, 70)
    apply_bitmask_(scores, torch.full((2, 2), -1, dtype=torch.int32))
    assert torch.isfinite(scores[:, :64]).all() and torch.isinf(scores[:, 64:]).all()
