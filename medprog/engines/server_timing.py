"""Request timeouts that follow the work asked for, at the server's measured speed.

A fixed timeout is wrong both ways: 60 s failed a 1024-token answer from a CPU server at
15 tok/s five times over, while a one-letter choice needs a few seconds. A request's timeout is
its prompt and the tokens it may generate, at the measured speed, times a slack factor, never
under a floor.
"""

from __future__ import annotations

import threading

from medprog.engines.constraints import ChoiceConstraint, Constraint

CONNECT_TIMEOUT_S = 10.0


class ServerSpeed:
    """The server's per-request generation speed, measured from replies, and the timeouts it implies.

    ``decode_tok_s`` starts at ``assumed_tok_s`` and follows completion tokens ÷ wall seconds of
    replies with at least ``min_measured_tokens`` tokens (exponential moving average; prompt time
    included, so the estimate errs slow). Concurrent requests share the server, so the measured
    per-request speed already reflects the load medprog puts on it.
    """

    def __init__(self, assumed_tok_s: float = 10.0, prefill_tok_s: float = 200.0, floor_s: float = 30.0,
                 slack: float = 3.0, min_measured_tokens: int = 16) -> None:
        if min(assumed_tok_s, prefill_tok_s, floor_s, slack) <= 0:
            raise ValueError("ServerSpeed: speeds, floor and slack must be positive")
        self.decode_tok_s, self.prefill_tok_s = assumed_tok_s, prefill_tok_s
        self.floor_s, self.slack, self.min_measured_tokens = floor_s, slack, min_measured_tokens
        self.measured = 0
        self._lock = threading.Lock()

    def observe(self, completion_tokens: int, seconds: float) -> None:
        """Fold one answered request into the speed estimate."""
        if completion_tokens < self.min_measured_tokens or seconds <= 0:
            return
        speed = completion_tokens / seconds
        with self._lock:
            self.decode_tok_s = speed if self.measured == 0 else 0.7 * self.decode_tok_s + 0.3 * speed
            self.measured += 1

    def timeout_for(self, prompt_tokens: int, max_new_tokens: int) -> float:
        """Seconds to wait for a request that reads ``prompt_tokens`` and may write ``max_new_tokens``."""
        work = prompt_tokens / self.prefill_tok_s + max_new_tokens / self.decode_tok_s
        return max(self.floor_s, self.slack * work)


def requested_tokens(c: Constraint | None, max_tokens: int) -> int:
    """The most tokens a request can generate: a choice is at most its longest option (plus end)."""
    if isinstance(c, ChoiceConstraint) and c.choices:
        return min(max_tokens, max(len(x) for x in c.choices) + 2)
    return max_tokens
