"""LAMAR's Span-Cluster Consensus for one note and category, as published (``ensemble/mbr.py``).

The steps LAMAR takes (github.com/biodatlab/medexact-lamar), re-implemented from its published
description and code, with the thresholds passed in:

1. **Weights**: `model_weights` under LAMAR's rule (pairs match at IoU ≥ ``min_pairwise_iou``;
   two members silent in the category agree with 1.0), over the members that mention the note.
2. **Clusters**: all members' spans are pooled in member order, each member's spans in the order
   it listed them, repeats included; spans with IoU ≥ ``min_cluster_iou`` are linked and each
   connected component is a cluster, found by a depth-first walk from the first unvisited span.
3. **Support**: the summed weight of the distinct members with a span in the cluster, kept when
   ≥ ``min_cluster_support`` (no tolerance).
4. **Boundary**: the exact ``(start, end)`` with the highest summed weight of the spans giving
   it (a member listing it twice votes twice); ties go to the shorter, then to the first met in
   the walk of step 2.
5. **Same-category merge**: kept spans are visited by (start, end); each is compared with the
   kept ones in order, and at the first with IoU ≥ ``min_iou_same_cat`` it is dropped, or, when
   longer, replaces that span in place.

Published behaviour reproduced here that is, by our reading, a bug in LAMAR — named, not fixed,
so that this mode gives LAMAR's outputs:

- **The merge chains** (step 5). A replacing span is not checked against the span it replaced
  nor against the other kept spans, and later spans are compared with it: ``(0,10)``,
  ``(2,14)``, ``(5,20)`` at 0.5 end as ``(5,20)`` alone, though ``(0,10)`` and ``(5,20)``
  overlap at IoU 0.25. medprog's mode merges into spans that are never replaced.
- **A refinement branch that never fires** (step 4). LAMAR also votes starts and ends apart,
  takes the observed boundary nearest to the best start and end, and returns it only when its
  score is *higher* than the best exact boundary's score — the maximum, so never. Its output is
  always the best exact boundary, which is what this mode returns; the dead branch is left out.
- **A threshold of 0 links everything.** IoU ≥ 0 holds for spans that do not overlap, so at
  ``min_cluster_iou=0`` a category's spans form one cluster and at ``min_iou_same_cat=0`` every
  kept span merges with the first kept one. (Pairs of IoU 0 in the soft-F1 add nothing.)

Departures of this mode from LAMAR's code (`ensemble.consensus` applies the note-level rules:
members that do not mention a note are left out of it, categories outside 1-9, empty spans and
negative starts are dropped, as LAMAR does):

- Offsets are converted with ``int()``; LAMAR drops a span whose offsets are not ``int``.
- LAMAR's ``independent`` option (best start and best end voted apart, off by default) is not
  offered, nor the dead refinement branch above.
- Input and output are medprog's ``{note_id: [(start, end, category)]}``, not LAMAR's JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

from medprog.optimizers.consensus_agreement import model_weights, span_iou


def _walk_clusters(pool: Sequence[tuple[int, int]], min_cluster_iou: float) -> list[list[int]]:
    """Connected components of the IoU ≥ threshold graph, each in LAMAR's depth-first visit order."""
    seen = [False] * len(pool)
    clusters = []
    for root in range(len(pool)):
        if seen[root]:
            continue
        seen[root] = True
        stack, order = [root], []
        while stack:
            cur = stack.pop()
            order.append(cur)
            for j in range(len(pool)):
                if not seen[j] and span_iou(pool[cur], pool[j]) >= min_cluster_iou:
                    seen[j] = True
                    stack.append(j)
        clusters.append(order)
    return clusters


def _best_boundary(spans: Sequence[tuple[int, int]], weights: Sequence[float]) -> tuple[int, int]:
    """The exact span with the highest summed weight; ties: shorter, then first in ``spans``."""
    votes: dict[tuple[int, int], float] = {}
    for sp, w in zip(spans, weights, strict=True):
        votes[sp] = votes.get(sp, 0.0) + w
    best = spans[0]
    for sp, v in votes.items():
        if (v, sp[0] - sp[1]) > (votes[best], best[0] - best[1]):
            best = sp
    return best


def _chaining_merge(spans: Sequence[tuple[int, int]], min_iou_same_cat: float) -> list[tuple[int, int]]:
    """LAMAR's same-category merge (step 5), chaining included."""
    kept: list[tuple[int, int]] = []
    for sp in sorted(spans):
        hit = next((i for i, prev in enumerate(kept) if span_iou(prev, sp) >= min_iou_same_cat), None)
        if hit is None:
            kept.append(sp)
        elif sp[1] - sp[0] > kept[hit][1] - kept[hit][0]:
            kept[hit] = sp
    return sorted(kept)


def lamar_category(spans_by_model: Sequence[Sequence[tuple[int, int]]], min_pairwise_iou: float,
                   min_cluster_iou: float, min_cluster_support: float,
                   min_iou_same_cat: float) -> list[tuple[int, int]]:
    """LAMAR's consensus spans for one category, from the ``(start, end)`` lists of the members that
    mention the note (members silent in this category included, as empty lists)."""
    if not any(spans_by_model):
        return []
    weights = model_weights(spans_by_model, min_pairwise_iou, mode="lamar")
    pool = [sp for spans in spans_by_model for sp in spans]
    owner = [m for m, spans in enumerate(spans_by_model) for _ in spans]
    kept = []
    for order in _walk_clusters(pool, min_cluster_iou):
        support = sum(weights[m] for m in sorted({owner[i] for i in order}))
        if support >= min_cluster_support:
            kept.append(_best_boundary([pool[i] for i in order], [weights[owner[i]] for i in order]))
    return _chaining_merge(kept, min_iou_same_cat)
