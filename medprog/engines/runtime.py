"""What an engine needs at run time in front of dspy: serialisation, a pre-call hook, scoped usage.

`GuardedEngine` wraps an engine as a dspy engine: one call at a time where the engine is not
thread-safe (one lock per engine, shared by every wrapper in front of it) and an optional
``before_call`` hook (budgets). Per-example usage comes from `accounting.usage_scope`, which
every engine records into itself: nothing here patches the caller's engine.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import Any


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
