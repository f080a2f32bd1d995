"""Compiled llguidance grammars are kept per tokenizer view and schema, and copies behave like fresh matchers."""

import llguidance
import llguidance.hf
import pytest
import torch

from medprog.engines.constraints import JsonConstraint, json_whitespace_free
from medprog.engines.grammar_processor import GrammarLogitsProcessor, MatcherCache, json_grammar, ll_tokenizer

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 12},
                                            "sure": {"type": "boolean"}},
          "required": ["answer", "sure"], "additionalProperties": False}


def mask_of(matcher, words: int) -> torch.Tensor:
    out = torch.zeros(words, dtype=torch.int32)
    matcher.unsafe_compute_mask_ptr(out.data_ptr(), words * 4)
    return out


def test_the_backend_compiles_each_schema_once_across_calls(tiny_engine):
    backend = tiny_engine.grammar
    other = {**SCHEMA, "required": ["answer"]}
    before = backend.matcher_cache().compiled
    for schema in (SCHEMA, SCHEMA, other, SCHEMA):
        backend.processor([JsonConstraint(json_schema=schema)] * 3, 4)
    assert backend.matcher_cache().compiled == before + 2


def test_copies_start_fresh_and_do_not_share_state(tiny_engine):
    ll_tok = tiny_engine.grammar.ll_tokenizer()
    grammar = json_grammar(json_whitespace_free(SCHEMA))
    words = (ll_tok.vocab_size + 31) // 32
    cache = MatcherCache(ll_tok)
    first, second = cache.matchers([grammar, grammar])
    fresh = llguidance.LLMatcher(ll_tok, grammar, log_level=0)
    for token in ll_tok.tokenize_str('{"answer":"ok"'):
        assert first.consume_token(token)
    (third,) = cache.matchers([grammar])
    start = mask_of(fresh, words)
    assert torch.equal(mask_of(second, words), start) and torch.equal(mask_of(third, words), start)
    assert not torch.equal(mask_of(first, words), start)
    assert cache.compiled == 1


def test_cached_and_uncached_processors_mask_alike(tiny_engine):
    ll_tok = tiny_engine.grammar.ll_tokenizer()
    grammar = json_grammar(json_whitespace_free(SCHEMA))
    vocab = tiny_engine.model.config.vocab_size
    cache = MatcherCache(ll_tok)
    cache.matchers([grammar])  # kept and warmed before the walk
    procs = [GrammarLogitsProcessor(ll_tok, [grammar], 1, cache), GrammarLogitsProcessor(ll_tok, [grammar], 1)]
    gen = torch.Generator().manual_seed(3)
    ids, masked = torch.zeros(1, 1, dtype=torch.long), 0
    for _ in range(20):
        scores = torch.randn(1, vocab, generator=gen)
        a, b = (p(ids, scores.clone()) for p in procs)
        assert torch.equal(a, b)
        masked += int(torch.isinf(a).any())
        ids = torch.cat([ids, a.argmax(-1, keepdim=True)], dim=1)
    assert masked >= 5


def test_a_grammar_that_does_not_compile_is_refused(tiny_engine):
    with pytest.raises(ValueError, match="does not compile"):
        MatcherCache(tiny_engine.grammar.ll_tokenizer()).matchers(["start: undefined_rule"])


def test_the_tokenizer_view_matches_llguidances_own_and_leaves_padding_alone(tiny_engine):
    tok = tiny_engine.tokenizer
    vocab = tiny_engine.model.config.vocab_size
    tok.backend_tokenizer.enable_padding(length=16)
    try:
        ours, theirs = ll_tokenizer(tok, vocab), llguidance.hf.from_tokenizer(tok, n_vocab=max(vocab, len(tok)))
        assert tok.backend_tokenizer.padding is not None
    finally:
        tok.backend_tokenizer.no_padding()
    text = "Patient denies chest pain; started aspirin 81 mg."
    assert ours.vocab_size == theirs.vocab_size and ours.eos_token == theirs.eos_token
    assert ours.tokenize_str(text) == theirs.tokenize_str(text) == tok(text, add_special_tokens=False)["input_ids"]
