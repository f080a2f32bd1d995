"""Token, call and time accounting, per step and in total.

Programs name the step they are in with `step("expert")`; every engine call made inside
is counted under that name (the innermost step wins). Counters are thread-safe because
programs run independent calls in parallel.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator

from pydantic import BaseModel

_STEP: contextvars.ContextVar[str] = contextvars.ContextVar("medprog_step", default="main")


class Usage(BaseModel):
    """What a set of calls cost."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    errors: int = 0
    wall_s: float = 0.0

    def add(self, other: Usage) -> None:
        for k in type(self).model_fields:
            setattr(self, k, getattr(self, k) + getattr(other, k))


class Ledger:
    """Per-step usage for one engine (or one program run)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.steps: dict[str, Usage] = {}

    def record(self, usage: Usage, step_name: str | None = None) -> None:
        name = step_name or _STEP.get()
        with self._lock:
            self.steps.setdefault(name, Usage()).add(usage)

    @property
    def total(self) -> Usage:
        total = Usage()
        with self._lock:
            for u in self.steps.values():
                total.add(u)
        return total

    def snapshot(self) -> dict[str, dict]:
        """JSON-ready ``{"total": ..., "steps": {name: ...}}``."""
        with self._lock:
            steps = {k: v.model_dump() for k, v in self.steps.items()}
        return {"total": self.total.model_dump(), "steps": steps}

    def reset(self) -> None:
        with self._lock:
            self.steps.clear()


def current_step() -> str:
    return _STEP.get()


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Count engine calls made inside this block under ``name``."""
    token = _STEP.set(name)
    try:
        yield
    finally:
        _STEP.reset(token)


_SCOPE: contextvars.ContextVar[Ledger | None] = contextvars.ContextVar("medprog_usage_scope", default=None)


@contextlib.contextmanager
def usage_scope() -> Iterator[Ledger]:
    """Collect the usage of every engine call made in this context (each example of an eval)."""
    ledger = Ledger()
    token = _SCOPE.set(ledger)
    try:
        yield ledger
    finally:
        _SCOPE.reset(token)


def record_usage(ledger: Ledger, usage: Usage) -> None:
    """Record one engine call's usage in the engine's ledger and in the current `usage_scope`, if any."""
    ledger.record(usage)
    scope = _SCOPE.get()
    if scope is not None and scope is not ledger:
        scope.record(usage)
