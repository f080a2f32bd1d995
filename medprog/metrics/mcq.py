"""Multiple-choice accuracy, with the cost of each answer (calls and tokens per question).

Records are the programs' JSON records: ``{"id", "answer", "gold", ...}`` plus optionally
``"mode"`` (the route taken) and ``"usage": {"calls", "prompt_tokens", "completion_tokens"}``.
"""

from __future__ import annotations

from typing import Any

USAGE_KEYS = ("calls", "prompt_tokens", "completion_tokens")


def accuracy(golds: list[str | None], preds: list[str | None]) -> float:
    """Share of questions answered with the gold letter (a missing prediction is wrong)."""
    if not golds:
        return 0.0
    return sum(p is not None and p == g for g, p in zip(golds, preds)) / len(golds)


def _mean_usage(records: list[dict[str, Any]]) -> dict[str, float]:
    n = len(records) or 1
    return {f"{k}_per_question": sum(float((r.get("usage") or {}).get(k, 0)) for r in records) / n
            for k in USAGE_KEYS}


def mcq_metrics(golds: dict[str, str | None], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy over all gold questions (unanswered ones count as wrong), per mode, and cost.

    ``golds`` maps question id → gold letter; records without a gold are ignored.
    """
    by_id = {str(r["id"]): r for r in records}
    ids = [i for i, g in golds.items() if g is not None]
    answered = [by_id[i] for i in ids if i in by_id]
    out: dict[str, Any] = {
        "accuracy": accuracy([golds[i] for i in ids], [(by_id.get(i) or {}).get("answer") for i in ids]),
        "accuracy_answered": accuracy([golds[str(r["id"])] for r in answered], [r.get("answer") for r in answered]),
        "n": len(ids),
        "n_answered": len(answered),
        **_mean_usage(answered),
    }
    modes = sorted({r["mode"] for r in answered if r.get("mode")})
    if modes:
        out["per_mode"] = {
            m: {"n": len(rs), "accuracy": accuracy([golds[str(r["id"])] for r in rs], [r.get("answer") for r in rs]),
                **_mean_usage(rs)}
            for m in modes for rs in [[r for r in answered if r.get("mode") == m]]
        }
    return out
