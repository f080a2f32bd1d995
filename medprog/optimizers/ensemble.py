"""Span-Cluster Consensus: merge several taggers' MedDec predictions into one (LAMAR's ensemble).

Two modes, chosen by ``ConsensusParams.mode``: ``"medprog"`` (the default, described here) and
``"lamar"``, LAMAR's published algorithm (``ensemble/mbr.py`` of github.com/biodatlab/medexact-lamar,
re-implemented in `consensus_lamar`, which names the bugs of LAMAR's that it reproduces).
``ConsensusParams(mode="lamar")`` takes LAMAR's thresholds; ``tune_ensemble(..., mode="lamar")``
tunes within LAMAR's rules; ``medprog compile tagger --optimizer ensemble -o mode=lamar`` stores
the mode in the artifact, and ``ensemble-apply`` applies it.

medprog's mode, per note and category:

1. **Model weights.** Each member's weight is its mean soft-F1 against every other member:
   spans are matched greedily one-to-one by IoU (highest first, only pairs with IoU above
   ``min_pairwise_iou``); soft P = ΣIoU/|A|, soft R = ΣIoU/|B|. Weights are normalised to sum
   to 1, or uniform when all are zero (a member with no spans here agrees with nobody).
   A member's repeated identical spans count once (they are collapsed before anything else).
2. **Clusters.** All members' spans are pooled; spans with IoU ≥ ``min_cluster_iou`` (and some
   overlap) are linked, and each connected component is a cluster.
3. **Support.** A cluster is kept when the summed weight of the distinct members with a span
   in it is ≥ ``min_cluster_support``. Its span is the exact (start, end) with the highest
   summed weight of members predicting exactly it; ties go to the shorter, then the earlier.
4. **Same-category merge.** Kept spans are visited longest first; one overlapping an already
   kept span at IoU ≥ ``min_iou_same_cat`` is merged into (absorbed by) that longer span.

IoU is intersection over union of half-open character ranges. The four thresholds are tuned
with Optuna on a dev split to maximise the MedDec ``overall`` score (`tune_ensemble`).

Departures of medprog's mode from LAMAR's (the ``"lamar"`` mode follows LAMAR in each; its own
few departures, none of which changes an output for a valid submission, are in `consensus_lamar`):

- **Silent members.** Two members both silent in a category agree with score 0 here (a silent
  member agrees with nobody), 1.0 in LAMAR.
- **Pairwise threshold.** Pairs match at IoU *above* ``min_pairwise_iou`` here, at IoU ≥ it in
  LAMAR.
- **Repeated spans.** A member's repeated identical spans are collapsed here; LAMAR counts each
  (in the soft-F1 denominators and as extra boundary votes).
- **Span order.** Each member's spans are sorted here; LAMAR keeps the listed order, which
  breaks greedy-matching and boundary ties.
- **Boundary ties.** Equal weight and length go to the earlier span here; to the first met in
  LAMAR's depth-first cluster walk there.
- **Same-category merge.** Longest first, into spans that are never replaced; LAMAR's merge
  visits spans by start and lets a longer span replace a kept one, which chains (a bug).
- **Zero thresholds.** Spans must overlap to link or merge here; in LAMAR IoU ≥ 0 links and
  merges spans that do not overlap at all.
- **Tolerance.** Cluster links, support and merges compare with a 1e-9 tolerance here (so three
  weights of 1/3 meet 1.0); LAMAR compares exactly.
- **Missing notes.** A member that does not mention a note counts as silent there; LAMAR
  leaves it out of that note (the others' weights are then normalised without it).
- **Offsets.** Offsets are converted with ``int()`` and a negative start is kept; LAMAR drops
  non-integer offsets and negative starts (`read_submission` refuses both anyway).
- **Defaults and tuning.** 0.3 / 0.5 / 0.5 / 0.5 (pairwise / cluster / support / same-category),
  60 seeded TPE trials over narrower ranges; LAMAR starts from 0.1 / 0.1 / 0.34 / 0.8 (the first
  trial it enqueues) and searches [0, 1] for each with 5,000 unseeded trials.
- **Not offered.** LAMAR's ``independent`` option (best start and end voted apart, off by default)
  and its boundary-refinement branch that never fires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field, model_validator

from medprog.data.meddec import SCORED_CATEGORIES, MedDecNote
from medprog.metrics.meddec import MedDecScorer
from medprog.optimizers.consensus_agreement import CONSENSUS_MODES, ConsensusMode, model_weights, soft_f1, span_iou
from medprog.optimizers.consensus_lamar import lamar_category

Span = tuple[int, int, int]
Predictions = dict[str, list[Span]]
_EPS = 1e-9
THRESHOLDS = ("min_pairwise_iou", "min_cluster_iou", "min_cluster_support", "min_iou_same_cat")
MODE_DEFAULTS: dict[str, dict[str, float]] = {
    "medprog": dict(zip(THRESHOLDS, (0.3, 0.5, 0.5, 0.5), strict=True)),
    "lamar": dict(zip(THRESHOLDS, (0.1, 0.1, 0.34, 0.8), strict=True)),  # LAMAR's enqueued first trial
}


class ConsensusParams(BaseModel):
    """The consensus mode and its four thresholds (all in [0, 1]).

    Thresholds not given take the mode's defaults: ``ConsensusParams(mode="lamar")`` is LAMAR's
    0.1 / 0.1 / 0.34 / 0.8, ``ConsensusParams()`` medprog's 0.3 / 0.5 / 0.5 / 0.5.
    """

    mode: ConsensusMode = "medprog"
    min_pairwise_iou: float = Field(0.3, ge=0.0, le=1.0)
    min_cluster_iou: float = Field(0.5, ge=0.0, le=1.0)
    min_cluster_support: float = Field(0.5, ge=0.0, le=1.0)
    min_iou_same_cat: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _mode_defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("mode", "medprog") in MODE_DEFAULTS:
            return {**MODE_DEFAULTS[data.get("mode", "medprog")], **data}
        return data


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
    if params.mode == "lamar":
        return lamar_category(spans_by_model, params.min_pairwise_iou, params.min_cluster_iou,
                              params.min_cluster_support, params.min_iou_same_cat)
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


def as_params(params: ConsensusParams | Mapping | None) -> ConsensusParams:
    """``params`` as `ConsensusParams` (None: medprog's defaults; a mapping: validated)."""
    if params is None:
        return ConsensusParams()
    return params if isinstance(params, ConsensusParams) else ConsensusParams(**params)


def consensus(member_predictions: Sequence[Mapping[str, Sequence[Sequence[int]]]],
              params: ConsensusParams | Mapping | None = None) -> Predictions:
    """Span-Cluster Consensus over members' ``{note_id: [(start, end, category)]}`` predictions.

    The result has every note id any member mentions; categories outside 1-9 are ignored. A note
    missing from a member counts as that member predicting nothing there (medprog's mode) or
    leaves that member out of the note (LAMAR's mode).
    """
    if not member_predictions:
        raise ValueError("consensus needs at least one member")
    params = as_params(params)
    note_ids = list(dict.fromkeys(nid for m in member_predictions for nid in m))
    out: Predictions = {}
    for nid in note_ids:
        present = [m for m in member_predictions if params.mode == "medprog" or nid in m]
        by_cat: dict[int, list[list[tuple[int, int]]]] = {}
        for k, member in enumerate(present):
            for s, e, c in member.get(nid, ()):
                c, s, e = int(c), int(s), int(e)
                if c not in SCORED_CATEGORIES or e <= s or (s < 0 and params.mode == "lamar"):
                    continue
                by_cat.setdefault(c, [[] for _ in present])[k].append((s, e))
        spans: list[Span] = []
        for c in sorted(by_cat):
            spans.extend((s, e, c) for s, e in consensus_category(by_cat[c], params))
        out[nid] = sorted(spans)
    return out


def _search_space(trial: Any, mode: ConsensusMode) -> ConsensusParams:
    """One trial's thresholds: medprog's ranges, or [0, 1] for each as LAMAR searched."""
    lows, high = ((0.0, 0.05, 0.0, 0.05), (0.9, 1.0, 1.0, 1.0)) if mode == "medprog" else ((0.0,) * 4, (1.0,) * 4)
    return ConsensusParams(mode=mode, **{name: trial.suggest_float(name, lo, hi)
                                         for name, lo, hi in zip(THRESHOLDS, lows, high, strict=True)})


def tune_ensemble(
    member_predictions: Sequence[Mapping[str, Sequence[Sequence[int]]]],
    dev_notes: Sequence[MedDecNote],
    n_trials: int = 60,
    seed: int = 0,
    mode: ConsensusMode = "medprog",
) -> tuple[ConsensusParams, dict]:
    """Tune the four thresholds of ``mode`` with Optuna (TPE, seeded) to maximise ``overall`` on dev.

    Members' predictions are restricted to the dev notes. The mode's default parameters are the
    first trial, so the result is never worse on dev than the defaults. medprog's mode searches
    [0, .9] / [.05, 1] / [0, 1] / [.05, 1], LAMAR's [0, 1] for each threshold. Returns the best
    parameters and their full dev metrics.
    """
    import optuna

    if mode not in CONSENSUS_MODES:
        raise ValueError(f"unknown consensus mode {mode!r}; valid modes: {', '.join(CONSENSUS_MODES)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scorer = MedDecScorer(dev_notes)
    ids = {n.id for n in dev_notes}
    members = [{k: v for k, v in m.items() if k in ids} for m in member_predictions]
    results: dict[int, tuple[ConsensusParams, dict]] = {}

    def objective(trial: optuna.Trial) -> float:
        params = _search_space(trial, mode)
        metrics = scorer.score(consensus(members, params))
        results[trial.number] = (params, metrics)
        return metrics["overall"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(MODE_DEFAULTS[mode])
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


__all__ = ["CONSENSUS_MODES", "ConsensusMode", "ConsensusParams", "MODE_DEFAULTS", "Predictions", "Span", "as_params",
           "consensus", "consensus_category", "model_weights", "noisy_member", "soft_f1", "span_iou", "tune_ensemble"]
