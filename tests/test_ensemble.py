"""Span-Cluster Consensus: hand cases for each step, and a win over the best member."""

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
    span_iou,
    tune_ensemble,
)


def test_span_iou():
    assert span_iou((0, 10), (0, 10)) == 1.0
    assert span_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert span_iou((0, 10), (10, 20)) == 0.0
    assert span_iou((0, 10), (2, 4)) == pytest.approx(0.2)


def test_soft_f1_greedy_one_to_one():
    # one match of IoU 1: P = 1/1, R = 1/2
    assert soft_f1([(0, 10)], [(0, 10), (20, 30)], 0.0) == pytest.approx(2 / 3)
    # (0,10)~(0,8) IoU .8 is taken first; (0,6) is then left without a partner: P=.8/2, R=.8/1
    assert soft_f1([(0, 10), (0, 6)], [(0, 8)], 0.0) == pytest.approx(2 * 0.4 * 0.8 / 1.2)
    # pairs must be strictly above the threshold
    assert soft_f1([(0, 10)], [(0, 8)], 0.8) == 0.0
    assert soft_f1([], [(0, 8)], 0.0) == 0.0


def test_model_weights():
    assert model_weights([[(0, 10)], [(0, 10)], [(50, 60)]], 0.3) == pytest.approx([0.5, 0.5, 0.0])
    assert model_weights([[(0, 10)], [], []], 0.3) == pytest.approx([1 / 3] * 3)  # all zero -> uniform
    assert model_weights([[(0, 10)]], 0.3) == [1.0]
    # F1(0,1)=1, F1(0,2)=F1(1,2)=10/12 -> raw [11/12, 11/12, 10/12] / (32/12)
    assert model_weights([[(0, 10)], [(0, 10)], [(0, 12)]], 0.3) == pytest.approx([11 / 32, 11 / 32, 10 / 32])


def test_best_exact_span_by_weight_then_shorter():
    p = ConsensusParams()
    assert consensus_category([[(0, 10)], [(0, 10)], [(0, 12)]], p) == [(0, 10)]
    assert consensus_category([[(0, 12)], [(0, 12)], [(0, 10)]], p) == [(0, 12)]
    # equal weights: the shorter span wins
    assert consensus_category([[(0, 12)], [(0, 10)]], p) == [(0, 10)]


def test_support_threshold_uses_distinct_models():
    # a span only one of three members has: weights all zero -> uniform 1/3 support
    members = [[(100, 110)], [], []]
    assert consensus_category(members, ConsensusParams(min_cluster_support=0.5)) == []
    assert consensus_category(members, ConsensusParams(min_cluster_support=0.3)) == [(100, 110)]
    # two spans of the same member in one cluster count that member once
    members = [[(0, 10), (0, 11)], [], []]
    assert consensus_category(members, ConsensusParams(min_cluster_support=0.5)) == []
    # support exactly at the threshold is kept (1/3 + 1/3 + 1/3 == 1.0 despite rounding)
    assert consensus_category([[(0, 5)], [(0, 5)], [(0, 5)]], ConsensusParams(min_cluster_support=1.0)) == [(0, 5)]


def test_clusters_are_connected_components():
    # A-B and B-C link at IoU 1/3, A-C do not overlap: one cluster, best exact span = B
    # weights: F1(A,B)=F1(B,C)=1/3, F1(A,C)=0 -> [1/6, 1/3, 1/6] / (2/3) = [.25, .5, .25]
    members = [[(0, 10)], [(5, 15)], [(10, 20)]]
    assert consensus_category(members, ConsensusParams(min_pairwise_iou=0.3, min_cluster_iou=0.3)) == [(5, 15)]
    # above the link threshold they are separate one-member clusters with supports .25, .5, .25
    separate = dict(min_pairwise_iou=0.3, min_cluster_iou=0.5)
    assert consensus_category(members, ConsensusParams(**separate, min_cluster_support=0.5)) == [(5, 15)]
    assert consensus_category(members, ConsensusParams(**separate, min_cluster_support=0.6)) == []


def test_same_category_merge_into_longer():
    members = [[(0, 20), (0, 12)], [(0, 20), (0, 12)]]
    # IoU .6 < .9: two clusters, both fully supported; merged at IoU >= .3 into the longer one
    assert consensus_category(members, ConsensusParams(min_cluster_iou=0.9, min_iou_same_cat=0.3)) == [(0, 20)]
    assert consensus_category(members, ConsensusParams(min_cluster_iou=0.9, min_iou_same_cat=0.7)) == [(0, 12), (0, 20)]


def test_consensus_per_category_and_note():
    a = {"n1": [(0, 20, 5), (0, 12, 3), (30, 40, 10)], "n2": [(5, 9, 1)]}
    b = {"n1": [(0, 20, 5), (0, 12, 3)]}  # b says nothing about n2
    c = {"n1": [(0, 20, 5)], "n2": []}
    out = consensus([a, b, c])
    # categories never merge with each other; category 10 is ignored; n2's lone span lacks support
    assert out == {"n1": [(0, 12, 3), (0, 20, 5)], "n2": []}
    assert consensus([a], {"min_cluster_support": 0.5}) == {"n1": [(0, 12, 3), (0, 20, 5)], "n2": [(5, 9, 1)]}
    with pytest.raises(ValueError):
        consensus([])


@pytest.fixture(scope="module")
def dev_notes(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens") / "meddec"
    synth_meddec(root, n=150, seed=11)
    return load_meddec(root, "train")


def test_ensemble_beats_best_member(dev_notes):
    members = [noisy_member(dev_notes, seed=s) for s in (1, 2, 3)]
    scorer = MedDecScorer(dev_notes)
    member_overall = [scorer.score(m)["overall"] for m in members]
    default = scorer.score(consensus(members))["overall"]
    params, best = tune_ensemble(members, dev_notes, n_trials=12, seed=0)
    assert isinstance(params, ConsensusParams)
    assert best == scorer.score(consensus(members, params))
    print(f"members {[round(x, 4) for x in member_overall]}  default {default:.4f}  tuned {best['overall']:.4f}")
    assert default > max(member_overall) + 0.05
    assert best["overall"] >= default
