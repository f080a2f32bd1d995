"""`local:PATH` — a transformers causal LM in-process, constrained while decoding.

JSON and choice constraints use llguidance matchers (`GrammarLogitsProcessor`: whitespace-free,
strict JSON, closed objects; ``json_backend`` can pick outlines' outlines_core or xgrammar
processors instead); `TaggedText` uses medprog's own `TaggingLogitsProcessor`. Prompts are rendered
with the tokenizer's chat template when it has one (`render_prompt`, shared with training).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import torch

from medprog.engines.base import Completion, Engine, Messages, Sampling
from medprog.engines.constraints import (
    ChoiceConstraint,
    Constraint,
    ConstraintViolation,
    JsonConstraint,
    TaggedConstraint,
    check_text,
    json_whitespace_free,
)
from medprog.engines.grammar_processor import GrammarLogitsProcessor, choice_grammar, json_grammar, ll_tokenizer
from medprog.engines.tagging_processor import TagAutomaton, TaggingLogitsProcessor, automaton_for


class ModelPathError(ValueError):
    """``local:PATH`` that is missing or not a transformers model directory."""


def render_prompt(tokenizer, messages: Messages) -> list[int]:
    """Prompt token ids: the chat template with a generation prompt, else a plain layout."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    text = "".join(f"{m['role']}: {m['content']}\n\n" for m in messages) + "assistant: "
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn_id(tokenizer) -> int:
    return tokenizer.eos_token_id


def load_model_dir(path: str | Path, dtype: torch.dtype | None = None):
    """Load tokenizer and model, with an error that names the path and what is missing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path).expanduser()
    if not path.exists():
        raise ModelPathError(f"model path {path} does not exist (build one with `medprog compile tagger "
                             f"--optimizer dft` or point --lm at a transformers model directory)")
    if not (path / "config.json").is_file():
        raise ModelPathError(f"{path} is not a transformers model directory: no config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise ModelPathError(f"{path}: cannot load a causal LM and tokenizer: {e}") from e
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def _xgrammar_json_processor(backend, schema: str):
    """outlines' xgrammar processor for a JSON schema compiled with no free whitespace.

    xgrammar builds in ~0.3 s where outlines_core took ~29 s for a nested, bounded schema and
    decodes at ~0.98x unconstrained speed (benchmarks/constraints.py); outlines' own wrapper
    cannot turn whitespace off, so the grammar is compiled here and handed to its processor.
    Not the default: its strings admit raw control characters, which strict JSON rejects (the
    property tests caught it); llguidance is the default (`GrammarLogitsProcessor`).
    """
    from outlines.backends.xgrammar import XGrammarLogitsProcessor

    grammar = backend.grammar_compiler.compile_json_schema(schema, any_whitespace=False, separators=(",", ":"))
    return XGrammarLogitsProcessor(grammar, backend.tensor_library_name)


JSON_BACKENDS = ("llguidance", "xgrammar", "outlines_core")


class LocalEngine(Engine):
    """Batched, constrained generation with a transformers model."""

    name = "local"

    def __init__(self, path: str | Path, *, json_backend: str = "llguidance", **kwargs: Any) -> None:
        """Load the model at ``path``; torch's thread count is the caller's (`medprog.engines.threads`)."""
        super().__init__(**kwargs)
        self.path = Path(path)
        self.tokenizer, self.model = load_model_dir(self.path)
        if json_backend not in JSON_BACKENDS:
            raise ValueError(f"json_backend {json_backend!r}: expected one of {', '.join(JSON_BACKENDS)}")
        self.json_backend = json_backend
        self._outlines_model = None
        self._ll_tokenizer = None
        self._xgrammar_backend: Any = None
        self._processors: dict[str, Any] = {}
        self._queue: list[dict[str, Any]] = []
        self._cv = threading.Condition()
        self._busy = False
        self.batch_window_s = 0.02

    def identity(self) -> dict[str, Any]:
        weights = sorted(self.path.glob("*.safetensors"))
        stamp = [(w.name, w.stat().st_size, int(w.stat().st_mtime)) for w in weights]
        return {"engine": "local", "path": str(self.path.resolve()), "weights": stamp}

    # constraint → logits processor ------------------------------------------------------
    def outlines_model(self):
        """outlines' wrapper of this model (for its outlines_core and xgrammar processors)."""
        if self._outlines_model is None:
            import outlines

            self._outlines_model = outlines.from_transformers(self.model, self.tokenizer)
        return self._outlines_model

    def _llguidance_processor(self, constraints: list[Constraint], prompt_length: int) -> GrammarLogitsProcessor:
        """One llguidance matcher per row."""
        grammars = [json_grammar(json_whitespace_free(c.json_schema)) if isinstance(c, JsonConstraint)
                    else choice_grammar(tuple(c.choices)) for c in constraints]  # type: ignore[union-attr]
        return GrammarLogitsProcessor(self.llguidance_tokenizer(), grammars, prompt_length)

    def _grammar_processor(self, c: JsonConstraint | ChoiceConstraint):
        """outlines' processor for ``json_backend`` outlines_core or xgrammar (choices: outlines_core)."""
        from outlines.backends import get_json_schema_logits_processor, get_regex_logits_processor

        key = c.model_dump_json()
        if key not in self._processors:
            if isinstance(c, JsonConstraint) and self.json_backend == "xgrammar":
                if self._xgrammar_backend is None:  # its tokenizer info is built once per engine
                    from outlines.backends.xgrammar import XGrammarBackend

                    self._xgrammar_backend = XGrammarBackend(self.outlines_model())
                proc = _xgrammar_json_processor(self._xgrammar_backend, json_whitespace_free(c.json_schema))
            elif isinstance(c, JsonConstraint):
                proc = get_json_schema_logits_processor(self.json_backend, self.outlines_model(),
                                                        json_whitespace_free(c.json_schema), whitespace_pattern="")
            else:
                proc = get_regex_logits_processor("outlines_core", self.outlines_model(),
                                                  "|".join(re.escape(x) for x in c.choices))
            self._processors[key] = proc
        proc = self._processors[key]
        proc.reset()
        return proc

    def logits_processors(self, constraints: list[Constraint | None], prompt_length: int) -> list[Any]:
        """What enforces one batch group's constraints: all tagged, one shared grammar, or none."""
        c0 = constraints[0]
        if isinstance(c0, TaggedConstraint):
            return [TaggingLogitsProcessor([self.tag_automaton(c) for c in constraints], prompt_length)]  # type: ignore[arg-type]
        if c0 is not None and self.json_backend == "llguidance":
            return [self._llguidance_processor(constraints, prompt_length)]  # type: ignore[arg-type]
        return [self._grammar_processor(c0)] if c0 is not None else []

    def llguidance_tokenizer(self) -> Any:
        """llguidance's view of this tokenizer, built once per engine (~0.5 s at 49k, ~1.3 s at 129k)."""
        if self._ll_tokenizer is None:
            self._ll_tokenizer = ll_tokenizer(self.tokenizer, self.model.config.vocab_size)
        return self._ll_tokenizer

    def tag_automaton(self, c: TaggedConstraint) -> TagAutomaton:
        return automaton_for(c.text, c.tags, self.tokenizer, end_of_turn_id(self.tokenizer), c.limits)

    # generation -----------------------------------------------------------------------
    def _generate(self, prompts: list[Messages], constraints: list[Constraint | None],
                  sampling: Sampling) -> list[Completion]:
        """Single prompts from concurrent threads are gathered into one batch (dynamic batching)."""
        if len(prompts) != 1:
            return self._generate_batch(prompts, constraints, sampling)
        item: dict[str, Any] = {"prompt": prompts[0], "constraint": constraints[0], "sampling": sampling}
        with self._cv:
            self._queue.append(item)
            while "result" not in item:
                if self._busy:
                    self._cv.wait()
                    continue
                self._busy = True
                self._cv.release()
                try:
                    time.sleep(self.batch_window_s)  # let concurrent callers join this batch
                finally:
                    self._cv.acquire()
                batch = [q for q in self._queue if q["sampling"] == item["sampling"]][: self.max_batch]
                self._queue = [q for q in self._queue if all(q is not b for b in batch)]
                self._cv.release()
                try:
                    results = self._generate_batch([q["prompt"] for q in batch], [q["constraint"] for q in batch],
                                                   sampling)
                except Exception as e:  # noqa: BLE001 - reported per call, never lost
                    results = [Completion(error=f"{type(e).__name__}: {e}") for _ in batch]
                finally:
                    self._cv.acquire()
                for q, r in zip(batch, results):
                    q["result"] = r
                self._busy = False
                self._cv.notify_all()
        return [item["result"]]

    def _generate_batch(self, prompts: list[Messages], constraints: list[Constraint | None],
                        sampling: Sampling) -> list[Completion]:
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(constraints):
            key = "tagged" if isinstance(c, TaggedConstraint) else (c.model_dump_json() if c else "none")
            groups.setdefault(key, []).append(i)
        out: list[Completion | None] = [None] * len(prompts)
        for key, idx in groups.items():
            for i, r in zip(idx, self._generate_group([prompts[i] for i in idx], [constraints[i] for i in idx],
                                                      sampling)):
                out[i] = r
        return out  # type: ignore[return-value]

    def _generate_group(self, prompts: list[Messages], constraints: list[Constraint | None],
                        sampling: Sampling) -> list[Completion]:
        tok = self.tokenizer
        encoded = [render_prompt(tok, p) for p in prompts]
        width = max(len(e) for e in encoded)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
        attention = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        processors = self.logits_processors(constraints, width)
        max_new = sampling.max_tokens
        if processors and isinstance(processors[0], TaggingLogitsProcessor):
            # the copy is forced: the automaton's bound
            max_new = max(a.max_tokens() for a in processors[0].automata) + 7
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new, eos_token_id=end_of_turn_id(tok), pad_token_id=pad,
            do_sample=sampling.temperature > 0, use_cache=True,
        )
        if sampling.temperature > 0:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        from transformers import LogitsProcessorList

        with torch.inference_mode():
            seqs = self.model.generate(input_ids=input_ids, attention_mask=attention,
                                       logits_processor=LogitsProcessorList(processors), **gen_kwargs)
        results = []
        for row, (e, c) in enumerate(zip(encoded, constraints)):
            new = seqs[row, width:].tolist()
            finished = end_of_turn_id(tok) in new
            if finished:
                new = new[:new.index(end_of_turn_id(tok))]
            new = [t for t in new if t != pad]
            text = tok.decode(new, skip_special_tokens=False)
            completion = Completion(text=text, prompt_tokens=len(e), completion_tokens=len(new),
                                    finish_reason="stop" if finished else "length")
            if c is not None:
                try:
                    check_text(c, text)
                except ConstraintViolation as err:
                    completion.error = f"constraint not met ({completion.finish_reason}): {err}"
            results.append(completion)
        return results


def json_loads_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None
