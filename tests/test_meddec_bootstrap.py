"""The MedDec paired bootstrap: point estimates equal the scorer's, intervals resample notes."""

from __future__ import annotations

import random

from medprog.data.meddec import Decision, MedDecNote
from medprog.metrics.meddec import MedDecScorer
from medprog.metrics.meddec_bootstrap import paired_bootstrap_meddec


def _notes(n: int, seed: int = 0) -> list[MedDecNote]:
    rng = random.Random(seed)
    words = "aspirin was started and metoprolol stopped after the echo showed low output".split()
    notes = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(30))
        spans = []
        for _ in range(3):
            s = rng.randrange(0, 25)
            starts = [k for k in range(len(text)) if k == 0 or text[k - 1] == " "]
            a, b = starts[s], starts[s + 2] - 1
            spans.append(Decision(start=a, end=b, category=rng.randint(1, 9), text=text[a:b]))
        notes.append(MedDecNote(id=f"n{i}", text=text, decisions=spans, gender="F"))
    return notes


def test_point_estimates_are_the_scorers_and_a_perfect_system_wins_everywhere():
    notes = _notes(12)
    scorer = MedDecScorer(notes)
    gold = {n.id: [d.as_span() for d in n.decisions] for n in notes}
    half = {n.id: [d.as_span() for d in n.decisions[:1]] for n in notes}
    out = paired_bootstrap_meddec(scorer, half, gold, n_boot=500)
    s_half, s_gold = scorer.score(half), scorer.score(gold)
    for metric in ("span_f1", "token_f1"):
        assert abs(out[metric].a - s_half[metric]) < 1e-9
        assert abs(out[metric].b - s_gold[metric]) < 1e-9
        assert out[metric].low > 0 and out[metric].p_not_better == 0.0
    assert out["span_f1"].b == 1.0


def test_identical_systems_give_a_zero_interval_and_swapping_flips_the_sign():
    notes = _notes(10, seed=1)
    scorer = MedDecScorer(notes)
    gold = {n.id: [d.as_span() for d in n.decisions] for n in notes}
    noisy = {nid: spans[:1] if int(nid[1:]) % 2 else spans for nid, spans in gold.items()}
    same = paired_bootstrap_meddec(scorer, noisy, noisy, n_boot=200)
    assert same["span_f1"].low == same["span_f1"].high == 0.0
    ab = paired_bootstrap_meddec(scorer, noisy, gold, n_boot=300, seed=3)
    ba = paired_bootstrap_meddec(scorer, gold, noisy, n_boot=300, seed=3)
    assert abs(ab["span_f1"].diff + ba["span_f1"].diff) < 1e-12
    assert abs(ab["span_f1"].low + ba["span_f1"].high) < 1e-12
    assert ab["span_f1"].low <= ab["span_f1"].diff <= ab["span_f1"].high
