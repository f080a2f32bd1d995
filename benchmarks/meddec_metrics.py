"""Benchmark: MedDec scoring of 1,000 synthetic notes and Span-Cluster Consensus over 3 x 1,000.

Budget (issue 3): each under 10 s on the project's 2-core CPU machine. Scoring is timed cold
(fresh tokenizer caches, NLTK already imported, which is a one-off ~3 s import cost reported
separately). Also prints the ensemble-vs-members figures on the synthetic data.

Run: ``.venv/bin/python benchmarks/meddec_metrics.py [--n 1000] [--seed 0]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 10.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    import nltk  # noqa: F401  (one-off import cost, reported, not part of the scoring time)

    t_import = time.perf_counter() - t0

    from medprog.data.meddec import load_meddec
    from medprog.data.synth_meddec import synth_meddec
    from medprog.metrics.meddec import MedDecScorer, score
    from medprog.optimizers.ensemble import consensus, noisy_member

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "meddec"
        t = time.perf_counter()
        synth_meddec(root, n=args.n, seed=args.seed)
        notes = load_meddec(root)
        t_data = time.perf_counter() - t
        members = [noisy_member(notes, seed=args.seed + k) for k in (1, 2, 3)]

        t = time.perf_counter()
        metrics = score(notes, members[0])
        t_score = time.perf_counter() - t

        t = time.perf_counter()
        merged = consensus(members)
        t_ens = time.perf_counter() - t

        scorer = MedDecScorer(notes)
        member_overall = [scorer.score(m)["overall"] for m in members]
        ens = scorer.score(merged)

    print(f"notes: {len(notes)}  (synth + load {t_data:.2f} s; `import nltk` {t_import:.2f} s)")
    print(f"score {len(notes)} notes:             {t_score:6.2f} s  (budget {BUDGET_S:.0f} s)"
          f"  overall={metrics['overall']:.4f}")
    print(f"ensemble 3 members x {len(notes)} notes: {t_ens:6.2f} s  (budget {BUDGET_S:.0f} s)")
    print("members overall: " + ", ".join(f"{x:.4f}" for x in member_overall)
          + f"  -> consensus (default params) overall {ens['overall']:.4f}"
          f" (span F1 {ens['span_f1']:.4f}, token F1 {ens['token_f1']:.4f})")
    ok = t_score < BUDGET_S and t_ens < BUDGET_S
    print("PASS" if ok else "FAIL: over budget")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
