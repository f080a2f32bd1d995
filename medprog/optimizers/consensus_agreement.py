"""Inter-member agreement for Span-Cluster Consensus, under medprog's rules or LAMAR's.

Both consensus modes weigh a member by its mean soft-F1 against the other members (spans of one
note and category, matched greedily one-to-one by IoU, highest first). The two rules differ in
two places, chosen by ``mode``:

- a pair of spans matches when its IoU is **above** the threshold (medprog) or **at least** the
  threshold (LAMAR);
- two members that are both silent agree with score **1.0** in LAMAR; in medprog a silent member
  agrees with nobody (0.0).

medprog's mode computes each pair's soft-F1 once (it is symmetric); LAMAR's computes it in both
directions as LAMAR does, so that greedy ties are broken in LAMAR's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

ConsensusMode = Literal["medprog", "lamar"]
CONSENSUS_MODES: tuple[ConsensusMode, ...] = ("medprog", "lamar")


def span_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Intersection over union of two half-open ranges ``(start, end)``."""
    inter = min(a[1], b[1]) - max(a[0], b[0])
    if inter <= 0:
        return 0.0
    return inter / ((a[1] - a[0]) + (b[1] - b[0]) - inter)


def soft_f1(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]], min_pairwise_iou: float,
            mode: ConsensusMode = "medprog") -> float:
    """Soft F1 of two span lists under greedy one-to-one IoU matching.

    Soft precision is the summed IoU of the matched pairs over ``len(a)``, soft recall the same
    over ``len(b)``; repeated spans count as often as they are listed. Pairs with equal IoU are
    taken in list order (``a`` first, then ``b``).
    """
    if not a or not b:
        return 1.0 if mode == "lamar" and not a and not b else 0.0
    pairs = []
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            v = span_iou(x, y)
            if v > min_pairwise_iou or (mode == "lamar" and v >= min_pairwise_iou):
                pairs.append((-v, i, j))
    pairs.sort()
    used_a, used_b = set(), set()
    total = 0.0
    for neg, i, j in pairs:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            total -= neg
    p, r = total / len(a), total / len(b)
    return 2 * p * r / (p + r) if p + r else 0.0


def model_weights(spans_by_model: Sequence[Sequence[tuple[int, int]]], min_pairwise_iou: float,
                  mode: ConsensusMode = "medprog") -> list[float]:
    """Normalised weights: each model's mean soft-F1 against the others (uniform if all zero)."""
    m = len(spans_by_model)
    if m == 1:
        return [1.0]
    agree = [[0.0] * m for _ in range(m)]
    for i in range(m):
        for j in range(m):
            if i < j or (mode == "lamar" and i != j):
                agree[i][j] = soft_f1(spans_by_model[i], spans_by_model[j], min_pairwise_iou, mode)
                if mode == "medprog":
                    agree[j][i] = agree[i][j]
    raw = [sum(agree[i]) / (m - 1) for i in range(m)]
    total = sum(raw)
    return [r / total for r in raw] if total > 0 else [1.0 / m] * m
