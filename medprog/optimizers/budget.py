"""Compile budgets and the best program so far.

Budgets (``--budget-calls``, ``--budget-tokens``) count every model call the compile makes
(student and teacher engines, cache hits included, so a warm cache does not change which
program comes out). When a budget is spent, the next call raises `BudgetExhausted`; the
prompt-optimizer wrapper catches it and keeps the best program `CandidateTracker` saw.
"""

from __future__ import annotations

import threading
from typing import Any

from dspy.utils.callback import BaseCallback

from medprog.optimizers.request import CompileError


class BudgetExhausted(BaseException):
    """The compile's call or token budget is spent.

    A `BaseException` on purpose: dspy's optimizers catch ``Exception`` per example and
    carry on, which would turn a spent budget into a stream of failed examples. This one
    passes through them to the optimizer wrapper, which keeps the best program so far.
    """


class Budget:
    """Counts calls (reserved before each call) and tokens (from the engines' ledgers)."""

    def __init__(self, calls: int | None = None, tokens: int | None = None) -> None:
        if calls is not None and calls < 1:
            raise CompileError(f"--budget-calls must be at least 1, got {calls}")
        if tokens is not None and tokens < 1:
            raise CompileError(f"--budget-tokens must be at least 1, got {tokens}")
        self.calls, self.tokens = calls, tokens
        self.calls_used = 0
        self._ledgers: list[tuple[Any, int]] = []
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.refused = False

    def attach(self, engine: Any) -> None:
        t = engine.ledger.total
        self._ledgers.append((engine.ledger, t.prompt_tokens + t.completion_tokens))

    @property
    def tokens_used(self) -> int:
        out = 0
        for ledger, start in self._ledgers:
            t = ledger.total
            out += t.prompt_tokens + t.completion_tokens - start
        return out

    @property
    def exhausted(self) -> bool:
        return self.reason is not None

    def spent(self) -> bool:
        """True once a limit is reached (never raises)."""
        if self.reason is None:
            if self.calls is not None and self.calls_used >= self.calls:
                self.reason = f"call budget of {self.calls} spent"
            elif self.tokens is not None and self.tokens_used >= self.tokens:
                self.reason = f"token budget of {self.tokens} spent ({self.tokens_used} used)"
        return self.reason is not None

    def check(self) -> None:
        """Raise `BudgetExhausted` if a limit is reached."""
        if self.spent():
            raise BudgetExhausted(self.reason)

    def check_refused(self) -> None:
        """Raise `BudgetExhausted` once a call has been refused (scoring the last allowed call is fine)."""
        if self.refused:
            raise BudgetExhausted(self.reason)

    def reserve_call(self) -> None:
        """Before each model call: raise (and remember the refusal) if spent, else count the call."""
        with self._lock:
            if self.spent():
                self.refused = True
                raise BudgetExhausted(self.reason)
            self.calls_used += 1

    def summary(self) -> dict[str, Any]:
        return {"calls": self.calls, "tokens": self.tokens, "calls_used": self.calls_used,
                "tokens_used": self.tokens_used, "exhausted": self.exhausted, "reason": self.reason}


# ---------------------------------------------------------------------------------------
# best program so far


class CandidateTracker(BaseCallback):
    """Remembers every fully evaluated candidate program, to keep the best if a compile stops early.

    Registered as a dspy callback, it sees each ``dspy.Evaluate`` call (random search and
    MIPROv2 score candidates that way); GEPA reports its candidates through `offer`.
    Only evaluations on the largest set seen are compared, and none made after the budget
    ran out (their failures would be the budget's, not the program's).
    """

    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget
        self.records: list[dict[str, Any]] = []
        self._open: dict[str, tuple[dict[str, Any], int]] = {}
        self._lock = threading.Lock()

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        from medprog.artifact import module_state

        program = inputs.get("program")
        devset = inputs.get("devset") or getattr(instance, "devset", None) or []
        if program is not None and hasattr(program, "named_predictors"):
            with self._lock:
                self._open[call_id] = (module_state(program), len(devset))

    def on_evaluate_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        with self._lock:
            opened = self._open.pop(call_id, None)
        if opened is None or exception is not None or outputs is None:
            return
        if self.budget is not None and self.budget.refused:
            return
        score = getattr(outputs, "score", None)
        if isinstance(score, (int, float)):  # dspy.Evaluate reports a percentage
            self.offer(opened[0], float(score) / 100.0, opened[1], source="evaluate")

    def offer(self, state: dict[str, Any], score: float, n: int, *, source: str) -> None:
        with self._lock:
            self.records.append({"state": state, "score": score, "n": n, "source": source})

    def best(self) -> dict[str, Any] | None:
        """The best record on the largest evaluation set (earliest on ties), or None."""
        if not self.records:
            return None
        n = max(r["n"] for r in self.records)
        pool = [r for r in self.records if r["n"] == n]
        return max(pool, key=lambda r: r["score"])  # max keeps the first of equals

    def scores(self) -> list[dict[str, Any]]:
        return [{"score": r["score"], "n": r["n"], "source": r["source"]} for r in self.records]
