"""The engine interface: where tokens come from.

An engine generates constrained completions for a batch of chat prompts
(`Engine.generate`) and implements dspy 3.4's engine protocol (``complete(Request)
-> Response``), so ``dspy.LM(..., engine=engine)`` makes it a dspy LM (`as_lm`).
Caching and accounting happen here, once, for every backend.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

import dspy
from dspy.lm15 import Message, Request, Response, TextPart
from dspy.lm15 import Usage as LMUsage
from pydantic import BaseModel

from medprog.engines.accounting import Ledger, Usage, record_usage
from medprog.engines.cache import RequestCache, request_key
from medprog.engines.constraints import Constraint, from_response_format

Messages = list[dict[str, str]]

DEFAULT_MAX_TOKENS = 1024
"""Completion token limit per model call when neither the user nor the program sets one (the one place it lives)."""


class Sampling(BaseModel):
    """Decoding settings. ``temperature == 0`` is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int | None = None


class Completion(BaseModel):
    """One generated output, or the error that stopped it (never a silent ``None``)."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    error: str | None = None
    cached: bool = False


class EngineError(RuntimeError):
    """A call that failed after retries, or whose output violated its constraint."""


class Engine(ABC):
    """Base class: subclasses implement `_generate` for a batch."""

    name: str = "engine"

    def __init__(self, *, cache: RequestCache | None = None, max_batch: int = 8) -> None:
        self.cache = cache or RequestCache(None)
        self.max_batch = max_batch
        self.ledger = Ledger()

    @abstractmethod
    def _generate(self, prompts: list[Messages], constraints: list[Constraint | None],
                  sampling: Sampling) -> list[Completion]:
        """Generate one completion per prompt (no cache, no accounting)."""

    def identity(self) -> dict[str, Any]:
        """What distinguishes this engine's outputs in the cache key."""
        return {"engine": self.name}

    def generate(self, prompts: list[Messages], constraints: list[Constraint | None],
                 sampling: Sampling | None = None) -> list[Completion]:
        """Constrained completions for a batch, served from the cache where possible."""
        sampling = sampling or Sampling()
        keys = [
            request_key({**self.identity(), "messages": p, "constraint": c.model_dump() if c else None,
                         "sampling": sampling.model_dump()})
            for p, c in zip(prompts, constraints)
        ]
        out: list[Completion | None] = []
        for k in keys:
            hit = self.cache.get(k)
            out.append(Completion(**{**hit, "cached": True}) if hit else None)
        todo = [i for i, c in enumerate(out) if c is None]
        for start in range(0, len(todo), self.max_batch):
            idx = todo[start:start + self.max_batch]
            t0 = time.perf_counter()
            results = self._generate([prompts[i] for i in idx], [constraints[i] for i in idx], sampling)
            wall = time.perf_counter() - t0
            for i, r in zip(idx, results):
                out[i] = r
                if r.error is None and sampling.temperature == 0:
                    self.cache.put(keys[i], r.model_dump(exclude={"cached"}))
            record_usage(self.ledger, Usage(calls=len(idx), prompt_tokens=sum(r.prompt_tokens for r in results),
                                     completion_tokens=sum(r.completion_tokens for r in results),
                                     errors=sum(r.error is not None for r in results), wall_s=wall))
        hits = [c for c in out if c is not None and c.cached]
        if hits:
            record_usage(self.ledger, Usage(calls=len(hits), cache_hits=len(hits),
                                     prompt_tokens=sum(c.prompt_tokens for c in hits),
                                     completion_tokens=sum(c.completion_tokens for c in hits)))
        return out  # type: ignore[return-value]

    # dspy 3.4 engine protocol -------------------------------------------------------
    def complete(self, request: Request) -> Response:
        messages: Messages = []
        if request.system is not None:
            system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            messages.append({"role": "system", "content": system})
        messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
        cfg = request.config
        constraint = from_response_format(cfg.response_format)
        sampling = Sampling(temperature=cfg.temperature or 0.0, top_p=cfg.top_p or 1.0,
                            max_tokens=cfg.max_tokens or DEFAULT_MAX_TOKENS, seed=cfg.seed)
        (result,) = self.generate([messages], [constraint], sampling)
        if result.error is not None:
            raise EngineError(result.error)
        return Response(id=None, model=self.name, message=Message.assistant((TextPart(result.text),)),
                        finish_reason="stop" if result.finish_reason == "stop" else "length",
                        usage=LMUsage(input_tokens=result.prompt_tokens, output_tokens=result.completion_tokens))

    def stream(self, request: Request):  # pragma: no cover - medprog never streams
        raise NotImplementedError("medprog engines do not stream")

    def close(self) -> None:
        pass

    def as_lm(self, **kwargs: Any) -> dspy.LM:
        """This engine as a ``dspy.LM`` (dspy's own cache off: the engine caches)."""
        return dspy.LM(f"medprog/{self.name}", engine=self, cache=False, **kwargs)
