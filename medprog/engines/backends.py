"""The local engine's JSON and choice constraint backends, by name: one registry, one factory.

As outlines' ``backends/`` does, a name (``--lm`` option ``json_backend``) maps to a factory, and
`get_backend` refuses an unknown name with the valid ones. ``llguidance`` (the default) applies one
llguidance matcher per batch row (strict JSON strings, no free whitespace); ``outlines_core`` and
``xgrammar`` use outlines' processors (their choice constraints go through outlines_core's regex).
Tagged text is not a grammar backend's job: medprog's own `TaggingLogitsProcessor` enforces it.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from medprog.engines.constraints import ChoiceConstraint, JsonConstraint, json_whitespace_free
from medprog.engines.grammar_processor import (
    GrammarLogitsProcessor,
    MatcherCache,
    choice_grammar,
    json_grammar,
    ll_tokenizer,
)

GrammarConstraint = JsonConstraint | ChoiceConstraint


class GrammarBackend(ABC):
    """Builds the logits processor that enforces one batch group's JSON or choice constraints."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    @abstractmethod
    def processor(self, constraints: list[GrammarConstraint], prompt_length: int) -> Any:
        """A logits processor for a batch whose rows carry ``constraints`` (prompts ``prompt_length`` long)."""


class LLGuidanceBackend(GrammarBackend):
    """One llguidance matcher per row, copied from this engine's compiled ones (`MatcherCache`)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__(model, tokenizer)
        self._ll_tokenizer: Any = None
        self._cache: MatcherCache | None = None
        self._lock = threading.Lock()

    def ll_tokenizer(self) -> Any:
        """llguidance's view of the tokenizer, built once (~0.25 s at 49k, ~1 s at 129k)."""
        with self._lock:  # concurrent first calls build it once
            if self._ll_tokenizer is None:
                self._ll_tokenizer = ll_tokenizer(self.tokenizer, self.model.config.vocab_size)
            return self._ll_tokenizer

    def matcher_cache(self) -> MatcherCache:
        """Compiled grammars of this engine's tokenizer, kept across calls."""
        ll_tok = self.ll_tokenizer()
        with self._lock:
            if self._cache is None:
                self._cache = MatcherCache(ll_tok)
            return self._cache

    def processor(self, constraints: list[GrammarConstraint], prompt_length: int) -> Any:
        grammars = [json_grammar(json_whitespace_free(c.json_schema)) if isinstance(c, JsonConstraint)
                    else choice_grammar(tuple(c.choices)) for c in constraints]
        return GrammarLogitsProcessor(self.ll_tokenizer(), grammars, prompt_length, self.matcher_cache())


class OutlinesCoreBackend(GrammarBackend):
    """outlines' outlines_core processors, one per distinct constraint, reset before each use."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__(model, tokenizer)
        self._outlines_model: Any = None
        self._processors: dict[str, Any] = {}

    def outlines_model(self) -> Any:
        """outlines' wrapper of the model, built once."""
        if self._outlines_model is None:
            import outlines

            self._outlines_model = outlines.from_transformers(self.model, self.tokenizer)
        return self._outlines_model

    def json_processor(self, schema: str) -> Any:
        from outlines.backends import get_json_schema_logits_processor

        return get_json_schema_logits_processor("outlines_core", self.outlines_model(), schema, whitespace_pattern="")

    def processor(self, constraints: list[GrammarConstraint], prompt_length: int) -> Any:
        """The rows of a batch group share one constraint: the first one's processor serves them all."""
        from outlines.backends import get_regex_logits_processor

        c = constraints[0]
        key = c.model_dump_json()
        if key not in self._processors:
            if isinstance(c, JsonConstraint):
                proc = self.json_processor(json_whitespace_free(c.json_schema))
            else:
                proc = get_regex_logits_processor("outlines_core", self.outlines_model(),
                                                  "|".join(re.escape(x) for x in c.choices))
            self._processors[key] = proc
        proc = self._processors[key]
        proc.reset()
        return proc


class XGrammarBackend(OutlinesCoreBackend):
    """outlines' xgrammar processor for JSON schemas compiled with no free whitespace.

    xgrammar builds in ~0.3 s where outlines_core took ~29 s for a nested, bounded schema and
    decodes at ~0.98x unconstrained speed (benchmarks/constraints.py); outlines' own wrapper
    cannot turn whitespace off, so the grammar is compiled here and handed to its processor.
    Not the default: its strings admit raw control characters, which strict JSON rejects (the
    property tests caught it).
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__(model, tokenizer)
        self._xgrammar: Any = None

    def json_processor(self, schema: str) -> Any:
        from outlines.backends.xgrammar import XGrammarBackend as OutlinesXGrammar
        from outlines.backends.xgrammar import XGrammarLogitsProcessor

        if self._xgrammar is None:  # its tokenizer info is built once per engine
            self._xgrammar = OutlinesXGrammar(self.outlines_model())
        grammar = self._xgrammar.grammar_compiler.compile_json_schema(schema, any_whitespace=False,
                                                                      separators=(",", ":"))
        return XGrammarLogitsProcessor(grammar, self._xgrammar.tensor_library_name)


BACKENDS: dict[str, Callable[[Any, Any], GrammarBackend]] = {
    "llguidance": LLGuidanceBackend,
    "xgrammar": XGrammarBackend,
    "outlines_core": OutlinesCoreBackend,
}
"""Backend name -> factory taking ``(model, tokenizer)``."""


def get_backend(name: str, model: Any, tokenizer: Any) -> GrammarBackend:
    """The backend called ``name`` for this model; an unknown name is refused with the valid ones."""
    factory = BACKENDS.get(name)
    if factory is None:
        raise ValueError(f"json_backend {name!r}: expected one of {', '.join(BACKENDS)}")
    return factory(model, tokenizer)
