"""Paired bootstrap for MedDec scores: the difference between two systems' span F1 and token F1
with a confidence interval, resampling notes.

Span F1 is a corpus ratio (summed true positives over summed predictions and gold spans), not a
mean of per-note scores, so each resample re-sums the notes' counts; token F1 is the mean of
per-note token F1. Both systems are scored on the same resampled notes (paired).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from pydantic import BaseModel

from medprog.metrics.meddec import MedDecScorer, SpanLike


class PairedDiff(BaseModel):
    """B − A on one metric: the point estimate on all notes and its bootstrap interval."""

    metric: str
    a: float
    b: float
    diff: float
    low: float
    high: float
    p_not_better: float
    """Share of resamples where B is not above A (one-sided)."""

    def cell(self) -> str:
        """``+0.012 [-0.004, +0.027]``: the way the README tables print a gain."""
        return f"{self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def _span_f1(counts: np.ndarray) -> np.ndarray:
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom, dtype=float), where=denom > 0)


def paired_bootstrap_meddec(scorer: MedDecScorer, a: Mapping[str, Iterable[SpanLike]],
                            b: Mapping[str, Iterable[SpanLike]], *, n_boot: int = 2000,
                            confidence: float = 0.95, seed: int = 0) -> dict[str, PairedDiff]:
    """``{"span_f1": ..., "token_f1": ...}``: B − A over ``scorer``'s notes, notes resampled together."""
    ca = np.asarray(scorer.note_counts(a), dtype=float)
    cb = np.asarray(scorer.note_counts(b), dtype=float)
    if not len(ca):
        raise ValueError("paired bootstrap needs at least one gold note")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ca), size=(n_boot, len(ca)))
    alpha = (1 - confidence) / 2
    out: dict[str, PairedDiff] = {}
    for metric in ("span_f1", "token_f1"):
        if metric == "span_f1":
            pa, pb = _span_f1(ca[:, :3].sum(0)), _span_f1(cb[:, :3].sum(0))
            ra, rb = _span_f1(ca[idx, :3].sum(1)), _span_f1(cb[idx, :3].sum(1))
        else:
            pa, pb = ca[:, 3].mean(), cb[:, 3].mean()
            ra, rb = ca[idx, 3].mean(1), cb[idx, 3].mean(1)
        d = rb - ra
        low, high = np.quantile(d, [alpha, 1 - alpha])
        out[metric] = PairedDiff(metric=metric, a=float(pa), b=float(pb), diff=float(pb - pa), low=float(low),
                                 high=float(high), p_not_better=float((d <= 0).mean()))
    return out
