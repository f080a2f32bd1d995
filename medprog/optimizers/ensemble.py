"""Span-Cluster Consensus: merge several taggers' MedDec predictions into one (LAMAR's ensemble).

Per note and category:

1. **Model weights.** Each member's weight is its mean soft-F1 against every other member:
   spans are matched greedily one-to-one by IoU (highest first, only pairs with IoU above
   ``min_pairwise_iou``); soft P = ΣIoU/|A|, soft R = ΣIoU/|B|. Weights are normalised to sum
   to 1, or uniform when all are zero (a member with no spans here agrees with nobody).
2. **Clusters.** All members' spans are pooled; spans with IoU ≥ ``min_cluster_iou`` (and some
   overlap) are linked, and each connected component is a cluster.
3. **Support.** A cluster is kept when the summed weight of the distinct members with a span
   in it is ≥ ``min_cluster_support``. Its span is the exact (start, end) with the highest
   summed weight of members predicting exactly it; ties go to the shorter, then the earlier.
4. **Same-category merge.** Kept spans are visited longest first; one overlapping an already
   kept span at IoU ≥ ``min_iou_same_cat`` is merged into (absorbed by) that longer span.

IoU is intersection over union of half-open character ranges. The four thresholds are tuned
with Optuna on a dev split to maximise the MedDec ``overall`` score (`tune_ensemble`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from medprog.data.meddec import SCORED_CATEGORIES, MedDecNote
from medprog.metrics.meddec import MedDecScorer

Span = tuple[int, int, int]
Predictions = dict[str, list[Span]]
_EPS = 1e-9


class ConsensusParams(BaseModel):
    """The four Span-Cluster Consensus thresholds (all in [0, 1])."""

    min_pairwise_iou: float = Field(0.3, ge=0.0, le=1.0)
    min_cluster_iou: float = Field(0.5, ge=0.0, le=1.0)
    min_cluster_support: float = Field(0.5, ge=0.0, le=1.0)
    min_iou_same_cat: float = Field(0.5, ge=0.0, le=1.0)


def span_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Intersection over union of two half-open ranges ``(start, end)``."""
    inter = min(a[1], b[1]) - max(a[0], b[0])
    if inter <= 0:
        return 0.0
    return inter / ((a[1] - a[0]) + (b[1] - b[0]) - inter)


def soft_f1(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]], min_pairwise_iou: float) -> float:
    """Soft F1 of two span lists under greedy one-to-one IoU matching (pairs with IoU > threshold)."""
    if not a or not b:
        return 0.0
    pairs = []
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            v = span_iou(x, y)
            if v > min_pairwise_iou:
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


def model_weights(spans_by_model: Sequence[Sequence[tuple[int, int]]], min_pairwise_iou: float) -> list[float]:
    """Normalised weights: each model's mean soft-F1 against the others (uniform if all zero)."""
    m = len(spans_by_model)
    if m == 1:
        return [1.0]
    agree = [[0.0] * m for _ in range(m)]
    for i in range(m):
        for j in range(i + 1, m):
            agree[i][j] = agree[j][i] = soft_f1(spans_by_model[i], spans_by_model[j], min_pairwise_iou)
    raw = [sum(agree[i]) / (m - 1) for i in range(m)]
    total = sum(raw)
    return [r / total for r in raw] if total > 0 else [1.0 / m] * m


def _components(spans: list[tuple[int, int]], min_cluster_iou: float) -> list[list[int]]:
    """Connected components (indices into ``spans``, which is sorted by start) under the IoU link."""
    parent = list(range(len(spans)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, a in enumerate(spans):
        for j in range(i + 1, len(spans)):
            b = spans[j]
            if b[0] >= a[1]:
                break  # sorted by start: no later span overlaps a
            v = span_iou(a, b)
            if v > 0 and v + _EPS >= min_cluster_iou:
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(spans)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def consensus_category(spans_by_model: Sequence[Sequence[tuple[int, int]]],
                       params: ConsensusParams) -> list[tuple[int, int]]:
    """Consensus spans for one note and one category, from each member's ``(start, end)`` list."""
    members = [sorted(set(s)) for s in spans_by_model]
    if not any(members):
        return []
    weights = model_weights(members, params.min_pairwise_iou)
    who: dict[tuple[int, int], set[int]] = {}
    for m, spans in enumerate(members):
        for sp in spans:
            who.setdefault(sp, set()).add(m)
    pool = sorted(who)
    kept = []
    for comp in _components(pool, params.min_cluster_iou):
        models = set().union(*(who[pool[i]] for i in comp))
        if sum(weights[m] for m in models) + _EPS < params.min_cluster_support:
            continue
        best = min(
            (pool[i] for i in comp),
            key=lambda sp: (-sum(weights[m] for m in who[sp]), sp[1] - sp[0], sp[0], sp[1]),
        )
        kept.append(best)
    kept.sort(key=lambda sp: (-(sp[1] - sp[0]), sp[0]))
    final: list[tuple[int, int]] = []
    for sp in kept:
        if any((v := span_iou(sp, other)) > 0 and v + _EPS >= params.min_iou_same_cat for other in final):
            continue
        final.append(sp)
    return sorted(final)


def consensus(member_predictions: Sequence[Mapping[str, Sequence[Sequence[int]]]],
              params: ConsensusParams | Mapping | None = None) -> Predictions:
    """Span-Cluster Consensus over members' ``{note_id: [(start, end, category)]}`` predictions.

    A note missing from a member counts as that member predicting nothing there. The result
    has every note id any member mentions; categories outside 1-9 are ignored.
    """
    if not member_predictions:
        raise ValueError("consensus needs at least one member")
    if params is None:
        params = ConsensusParams()
    elif not isinstance(params, ConsensusParams):
        params = ConsensusParams(**params)
    note_ids = list(dict.fromkeys(nid for m in member_predictions for nid in m))
    out: Predictions = {}
    for nid in note_ids:
        by_cat: dict[int, list[list[tuple[int, int]]]] = {}
        for k, member in enumerate(member_predictions):
            for s, e, c in member.get(nid, ()):
                c = int(c)
                if c not in SCORED_CATEGORIES or e <= s:
                    continue
                by_cat.setdefault(c, [[] for _ in member_predictions])[k].append((int(s), int(e)))
        spans: list[Span] = []
        for c in sorted(by_cat):
            spans.extend((s, e, c) for s, e in consensus_category(by_cat[c], params))
        out[nid] = sorted(spans)
    return out


def tune_ensemble(
    member_predictions: Sequence[Mapping[str, Sequence[Sequence[int]]]],
    dev_notes: Sequence[MedDecNote],
    n_trials: int = 60,
    seed: int = 0,
) -> tuple[ConsensusParams, dict]:
    """Tune the four thresholds with Optuna (TPE, seeded) to maximise ``overall`` on ``dev_notes``.

    Members' predictions are restricted to the dev notes. The default parameters are the first
    trial, so the result is never worse on dev than the defaults. Returns the best parameters
    and their full dev metrics.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scorer = MedDecScorer(dev_notes)
    ids = {n.id for n in dev_notes}
    members = [{k: v for k, v in m.items() if k in ids} for m in member_predictions]
    results: dict[int, tuple[ConsensusParams, dict]] = {}

    def objective(trial: optuna.Trial) -> float:
        params = ConsensusParams(
            min_pairwise_iou=trial.suggest_float("min_pairwise_iou", 0.0, 0.9),
            min_cluster_iou=trial.suggest_float("min_cluster_iou", 0.05, 1.0),
            min_cluster_support=trial.suggest_float("min_cluster_support", 0.0, 1.0),
            min_iou_same_cat=trial.suggest_float("min_iou_same_cat", 0.05, 1.0),
        )
        metrics = scorer.score(consensus(members, params))
        results[trial.number] = (params, metrics)
        return metrics["overall"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(ConsensusParams().model_dump())
    study.optimize(objective, n_trials=max(1, n_trials))
    return results[study.best_trial.number]


def noisy_member(
    notes: Sequence[MedDecNote],
    seed: int,
    p_drop: float = 0.25,
    p_shift: float = 0.25,
    p_relabel: float = 0.05,
    adds_per_note: float = 1.0,
) -> Predictions:
    """A simulated ensemble member: gold spans with independent, seeded errors.

    Each gold span (categories 1-9) is dropped with ``p_drop``, else has one boundary moved by
    one word with ``p_shift``, else gets a random category with ``p_relabel``; each note also
    gets on average ``adds_per_note`` spurious spans of 1-5 words. For tests and demos of the
    ensemble (members whose errors are independent).
    """
    import random
    import re

    rng = random.Random(seed)
    out: Predictions = {}
    cats = sorted(SCORED_CATEGORIES)
    for note in notes:
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", note.text)]
        spans: list[Span] = []
        for d in note.decisions:
            if d.category not in SCORED_CATEGORIES:
                continue
            r = rng.random()
            s, e, c = d.start, d.end, d.category
            if r < p_drop:
                continue
            if r < p_drop + p_shift and words:
                starts = [w[0] for w in words if w[0] < e]
                ends = [w[1] for w in words if w[1] > s]
                move = rng.choice(("grow_start", "shrink_start", "grow_end", "shrink_end"))
                if move == "grow_start":
                    s = max([w for w in starts if w < s], default=s)
                elif move == "shrink_start":
                    s = min([w for w in starts if w > s], default=s)
                elif move == "grow_end":
                    e = min([w for w in ends if w > e], default=e)
                else:
                    e = max([w for w in ends if w < e], default=e)
                if e <= s:
                    s, e = d.start, d.end
            elif r < p_drop + p_shift + p_relabel:
                c = rng.choice([x for x in cats if x != c])
            spans.append((s, e, c))
        n_add = int(adds_per_note) + (1 if rng.random() < adds_per_note - int(adds_per_note) else 0)
        for _ in range(n_add if words else 0):
            i = rng.randrange(len(words))
            j = min(len(words) - 1, i + rng.randint(0, 4))
            spans.append((words[i][0], words[j][1], rng.choice(cats)))
        out[note.id] = sorted(set(spans))
    return out
