"""`local:PATH` — a transformers causal LM in-process, constrained while decoding.

JSON and choice constraints go through the grammar backend named by ``json_backend``
(`medprog.engines.backends`: llguidance matchers by default — whitespace-free, strict JSON, closed
objects — or outlines' outlines_core / xgrammar processors); `TaggedText` uses medprog's own
`TaggingLogitsProcessor`. Prompts are rendered
with the tokenizer's chat template when it has one (`render_prompt`, shared with training).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import torch

from medprog.engines.backends import get_backend
from medprog.engines.base import Completion, Engine, Messages, Sampling
from medprog.engines.constraints import (
    Constraint,
    ConstraintViolation,
    TaggedConstraint,
    check_text,
)
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


class LocalEngine(Engine):
    """Batched, constrained generation with a transformers model."""

    name = "local"

    def __init__(self, path: str | Path, *, json_backend: str = "llguidance", **kwargs: Any) -> None:
        """Load the model at ``path``; torch's thread count is the caller's (`medprog.engines.threads`)."""
        super().__init__(**kwargs)
        self.path = Path(path)
        self.tokenizer, self.model = load_model_dir(self.path)
        self.json_backend = json_backend
        self.grammar = get_backend(json_backend, self.model, self.tokenizer)
        self._queue: list[dict[str, Any]] = []
        self._cv = threading.Condition()
        self._busy = False
        self.batch_window_s = 0.02

    def identity(self) -> dict[str, Any]:
        weights = sorted(self.path.glob("*.safetensors"))
        stamp = [(w.name, w.stat().st_size, int(w.stat().st_mtime)) for w in weights]
        return {"engine": "local", "path": str(self.path.resolve()), "weights": stamp}

    # constraint → logits processor ------------------------------------------------------
    def logits_processors(self, constraints: list[Constraint | None], prompt_length: int) -> list[Any]:
        """What enforces one batch group's constraints: all tagged, one shared grammar, or none."""
        c0 = constraints[0]
        if isinstance(c0, TaggedConstraint):
            return [TaggingLogitsProcessor([self.tag_automaton(c) for c in constraints], prompt_length)]  # type: ignore[arg-type]
        return [self.grammar.processor(constraints, prompt_length)] if c0 is not None else []  # type: ignore[arg-type]

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
