"""medprog's and LAMAR's Span-Cluster Consensus on hand-worked notes where they differ.

Each expected output is worked out by hand in the comments; the thresholds are given in the
order pairwise / cluster / support / same-category.
"""

from __future__ import annotations

import pytest

from medprog.data.meddec import load_meddec
from medprog.data.synth_meddec import synth_meddec
from medprog.metrics.meddec import MedDecScorer
from medprog.optimizers.ensemble import (
    ConsensusParams,
    consensus,
    consensus_category,
    model_weights,
    noisy_member,
    soft_f1,
    tune_ensemble,
)


def both(pairwise: float, cluster: float, support: float, same: float) -> tuple[ConsensusParams, ConsensusParams]:
    values = dict(min_pairwise_iou=pairwise, min_cluster_iou=cluster, min_cluster_support=support,
                  min_iou_same_cat=same)
    return ConsensusParams(mode="medprog", **values), ConsensusParams(mode="lamar", **values)


def test_mode_defaults() -> None:
    lamar = ConsensusParams(mode="lamar")
    assert (lamar.min_pairwise_iou, lamar.min_cluster_iou, lamar.min_cluster_support,
            lamar.min_iou_same_cat) == (0.1, 0.1, 0.34, 0.8)
    assert ConsensusParams(mode="lamar", min_cluster_iou=0.7).min_cluster_iou == 0.7
    medprog = ConsensusParams()
    assert (medprog.mode, medprog.min_pairwise_iou, medprog.min_cluster_support) == ("medprog", 0.3, 0.5)
    assert ConsensusParams(**lamar.model_dump()) == lamar  # what an artifact stores reloads as it was
    with pytest.raises(ValueError):
        ConsensusParams(mode="other")


def test_silent_members_agree_in_lamar_only() -> None:
    # A has a span, B and C are silent. medprog: every soft-F1 is 0 -> uniform 1/3 -> support 1/3 >= .3.
    # LAMAR: F1(B, C) = 1 -> raw [0, .5, .5] -> weights [0, .5, .5] -> A's cluster has support 0 < .3.
    members = [[(0, 10)], [], []]
    assert model_weights(members, 0.3) == pytest.approx([1 / 3] * 3)
    assert model_weights(members, 0.3, mode="lamar") == pytest.approx([0.0, 0.5, 0.5])
    assert soft_f1([], [], 0.3, mode="lamar") == 1.0 and soft_f1([], [], 0.3) == 0.0
    med, lam = both(0.3, 0.5, 0.3, 0.5)
    assert consensus_category(members, med) == [(0, 10)]
    assert consensus_category(members, lam) == []


def test_pairs_at_exactly_the_threshold_match_in_lamar_only() -> None:
    # IoU((0,10), (0,5)) = .5, the pairwise threshold.
    assert soft_f1([(0, 10)], [(0, 5)], 0.5) == 0.0
    assert soft_f1([(0, 10)], [(0, 5)], 0.5, mode="lamar") == 0.5
    # medprog: F1(A,B)=0, F1(A,C)=1, F1(B,C)=0 -> raw [.5, 0, .5] -> B weighs 0; (0,5) is its own cluster at
    # cluster IoU .6 and has support 0 < .2. LAMAR: F1(A,B)=F1(B,C)=.5, F1(A,C)=1 -> raw [.75, .5, .75]
    # -> weights [.375, .25, .375]; (0,5) has support .25 >= .2 and IoU .5 < .9 with (0,10): both kept.
    members = [[(0, 10)], [(0, 5)], [(0, 10)]]
    assert model_weights(members, 0.5, mode="lamar") == pytest.approx([0.375, 0.25, 0.375])
    med, lam = both(0.5, 0.6, 0.2, 0.9)
    assert consensus_category(members, med) == [(0, 10)]
    assert consensus_category(members, lam) == [(0, 5), (0, 10)]


def test_repeated_spans_are_collapsed_by_medprog_only() -> None:
    # LAMAR: one of A's two (0,10) matches B's -> P = 1/2, R = 1 -> soft-F1 2/3.
    assert soft_f1([(0, 10), (0, 10)], [(0, 10)], 0.1, mode="lamar") == pytest.approx(2 / 3)
    # Two members always weigh .5 each. medprog collapses A's two (0,12): votes (0,12) .5, (0,10) .5 -> tie
    # -> the shorter (0,10). LAMAR counts both: (0,12) gets .5 + .5 = 1.0 > .5 -> (0,12).
    members = [[(0, 12), (0, 12)], [(0, 10)]]
    med, lam = both(0.3, 0.5, 0.5, 0.5)
    assert consensus_category(members, med) == [(0, 10)]
    assert consensus_category(members, lam) == [(0, 12)]


def test_boundary_ties_go_to_the_earlier_span_or_to_lamars_walk_order() -> None:
    # IoU 1/3 links them; equal weight .5 and equal length 10. medprog: the earlier start (5,15).
    # LAMAR: the first span met in the walk, which starts at member A's (10,20).
    members = [[(10, 20)], [(5, 15)]]
    med, lam = both(0.1, 0.1, 0.5, 0.8)
    assert consensus_category(members, med) == [(5, 15)]
    assert consensus_category(members, lam) == [(10, 20)]


def test_lamar_merge_chains() -> None:
    # One member, three spans in separate clusters (cluster IoU .9), each with support 1.
    # IoU: (0,10)-(2,14) 8/14, (2,14)-(5,20) 9/18 = .5, (0,10)-(5,20) 5/20.
    # LAMAR, by start: (0,10) kept; (2,14) is longer -> replaces it; (5,20) vs (2,14) = .5, longer -> replaces.
    # medprog, longest first: (5,20) kept; (2,14) absorbed (.5); (0,10) overlaps (5,20) at .25 only -> kept.
    members = [[(0, 10), (2, 14), (5, 20)]]
    med, lam = both(0.3, 0.9, 0.5, 0.5)
    assert consensus_category(members, lam) == [(5, 20)]
    assert consensus_category(members, med) == [(0, 10), (5, 20)]


def test_zero_thresholds_link_disjoint_spans_in_lamar() -> None:
    # IoU 0 >= 0: LAMAR puts (0,5) and (10,20) in one cluster, votes tie at 1.0, the shorter (0,5) wins.
    members = [[(0, 5), (10, 20)]]
    med, lam = both(0.0, 0.0, 0.5, 0.0)
    assert consensus_category(members, lam) == [(0, 5)]
    assert consensus_category(members, med) == [(0, 5), (10, 20)]


def test_missing_note_is_silent_in_medprog_and_absent_in_lamar() -> None:
    # n2: medprog counts b as silent -> uniform 1/3 < .5, dropped. LAMAR leaves b out: a and c, F1 0 ->
    # uniform .5 >= .5, kept. Category 10 is ignored by both; n1 (only b, silent) is empty in both.
    a = {"n2": [(5, 9, 1), (0, 3, 10)]}
    b = {"n1": []}
    c = {"n2": []}
    med, lam = both(0.3, 0.5, 0.5, 0.5)
    assert consensus([a, b, c], med) == {"n2": [], "n1": []}
    assert consensus([a, b, c], lam) == {"n2": [(5, 9, 1)], "n1": []}
    # with b present and silent, LAMAR's b and c agree (1.0) and a weighs 0
    assert consensus([a, {"n2": []}, c], lam) == {"n2": []}


def test_modes_agree_where_no_rule_differs() -> None:
    # no silent pair, no repeats, IoUs away from the thresholds, no merge: the same spans
    members = [[(0, 10), (30, 40)], [(0, 11), (30, 40)], [(1, 10), (60, 70)]]
    med, lam = both(0.3, 0.5, 0.5, 0.5)
    assert consensus_category(members, med) == consensus_category(members, lam) == [(0, 10), (30, 40)]


def test_tune_within_lamar_mode(tmp_path) -> None:
    root = tmp_path / "meddec"
    synth_meddec(root, n=60, seed=5)
    notes = load_meddec(root, "train")
    members = [noisy_member(notes, seed=s) for s in (1, 2, 3)]
    scorer = MedDecScorer(notes)
    default = scorer.score(consensus(members, ConsensusParams(mode="lamar")))["overall"]
    params, best = tune_ensemble(members, notes, n_trials=6, seed=0, mode="lamar")
    assert params.mode == "lamar"
    assert best == scorer.score(consensus(members, params))
    assert best["overall"] >= default
    with pytest.raises(ValueError, match="unknown consensus mode"):
        tune_ensemble(members, notes, n_trials=1, mode="other")  # type: ignore[arg-type]
