"""What an engine needs at run time in front of dspy: serialisation, a pre-call hook, scoped usage.

`GuardedEngine` wraps an engine as a dspy engine: one call at a time where the engine is not
thread-safe (one lock per engine, shared by every wrapper in front of it) and an optional
``before_call`` hook (budgets). `usage_scope` collects the usage of the engine calls made in a
context, for engines whose ledger is teed by `install_usage_tee`.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from medprog.engines.accounting import Ledger, Usage

_SINK: contextvars.ContextVar[Ledger | None] = contextvars.ContextVar("medprog_usage_sink", default=None)


class UsageTee:
    """An engine ledger that also records into the ledger of the current scope (`usage_scope`)."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner

    def record(self, usage: Usage, step_name: str | None = None) -> None:
        self.inner.record(usage, step_name)
        sink = _SINK.get()
        if sink is not None:
            sink.record(usage, step_name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def install_usage_tee(engine: Any) -> None:
    """Let `usage_scope` see this engine's calls: its ledger is wrapped in a `UsageTee` (idempotent)."""
    if not isinstance(engine.ledger, UsageTee):
        engine.ledger = UsageTee(engine.ledger)


@contextlib.contextmanager
def usage_scope() -> Iterator[Ledger]:
    """Collect the usage of every engine call made in this context (engines need `install_usage_tee`)."""
    ledger = Ledger()
    token = _SINK.set(ledger)
    try:
        yield ledger
    finally:
        _SINK.reset(token)


def engine_thread_safe(engine: Any) -> bool:
    """Whether concurrent calls may reach the engine at once: yes unless it sets ``thread_safe = False``
    (servers take concurrent requests; the local engine batches concurrent callers)."""
    return bool(getattr(engine, "thread_safe", True))


_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def engine_lock(engine: Any) -> threading.Lock:
    """One lock per engine object, shared by every `GuardedEngine` in front of it (kept beside the
    engine, not on it, and dropped with it)."""
    with _LOCKS_LOCK:
        lock = _LOCKS.get(engine)
        if lock is None:
            lock = _LOCKS[engine] = threading.Lock()
        return lock


class GuardedEngine:
    """A dspy engine in front of a medprog engine: one call at a time where the engine needs it,
    and an optional ``before_call`` hook (budgets) that may raise to stop the caller."""

    def __init__(self, engine: Any, *, before_call: Callable[[], None] | None = None,
                 lock: threading.Lock | None = None) -> None:
        self.engine = engine
        self.name = getattr(engine, "name", "engine")
        self.before_call = before_call
        self.lock = lock if lock is not None else (None if engine_thread_safe(engine) else engine_lock(engine))

    def complete(self, request: Any) -> Any:
        with self.lock if self.lock is not None else contextlib.nullcontext():
            if self.before_call is not None:
                self.before_call()
            return self.engine.complete(request)

    def stream(self, request: Any):  # pragma: no cover - medprog never streams
        raise NotImplementedError("medprog engines do not stream")

    def as_lm(self, **kwargs: Any):
        import dspy

        return dspy.LM(f"medprog/{self.name}", engine=self, cache=False, **kwargs)
