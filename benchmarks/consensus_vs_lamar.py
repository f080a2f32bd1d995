"""Benchmark: medprog's two consensus modes against LAMAR's own ``ensemble/mbr.py`` on random notes.

LAMAR's file is not part of medprog: pass a copy of it (github.com/biodatlab/medexact-lamar,
``ensemble/mbr.py``). Its function definitions are loaded (the script part after its
``# Main run`` banner, which reads LAMAR's prediction files, is not run) and applied to each note
the way LAMAR's loader groups members (a member that does not mention a note is left out).

Members are random: 2-4 per note set, spans shifted, dropped, relabelled (categories 10-11
included), repeated and shuffled, some notes missing from some members. For each threshold
setting (LAMAR's defaults, medprog's, 0, 1 and random ones) it prints how many notes come out
differently from LAMAR in ``mode="lamar"`` (expected: 0) and in ``mode="medprog"``.

Run: ``.venv/bin/python benchmarks/consensus_vs_lamar.py PATH/TO/mbr.py [--notes 2600] [--seed 0]``
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medprog.optimizers.ensemble import THRESHOLDS, ConsensusParams, Predictions, consensus

MAIN_BANNER = "# Main run"


def load_lamar(path: Path) -> Callable[..., dict]:
    """LAMAR's ``mbr_cluster_and_refine_single_doc`` from its file, without running its script part."""
    source = path.read_text(encoding="utf-8").split(MAIN_BANNER)[0]
    namespace: dict[str, Any] = {"__name__": "lamar_mbr"}
    exec(compile(source, str(path), "exec"), namespace)  # noqa: S102 - the user's own copy of LAMAR's file
    return namespace["mbr_cluster_and_refine_single_doc"]


def lamar_consensus(single_doc: Callable[..., dict], members: list[Predictions], params: dict) -> Predictions:
    """LAMAR's output for every note any member mentions, members grouped as LAMAR's loader does."""
    by_note: dict[str, dict[int, list[dict]]] = {}
    for idx, member in enumerate(members):
        for nid, spans in member.items():
            by_note.setdefault(nid, {})[idx] = [{"start_offset": s, "end_offset": e, "category": c}
                                                for s, e, c in spans]
    out = {}
    for nid, indexed in by_note.items():
        preds = single_doc(indexed, **params)["final_predictions"]
        out[nid] = [(p["start_offset"], p["end_offset"], p["category"]) for p in preds]
    return out


def random_members(rng: random.Random, n_notes: int, n_members: int) -> list[Predictions]:
    """Members that share noisy copies of each note's spans, plus spurious ones of their own."""
    members: list[Predictions] = [{} for _ in range(n_members)]
    for k in range(n_notes):
        truth = []
        for _ in range(rng.randint(0, 6)):
            s = rng.randrange(0, 200, rng.choice((1, 5)))
            truth.append((s, s + rng.randint(1, 40), rng.randint(1, 9)))
        for member in members:
            if rng.random() < 0.05:
                continue  # this member does not mention the note
            spans = []
            for s, e, c in truth:
                r = rng.random()
                if r < 0.3:
                    continue
                if r < 0.6:
                    s2, e2 = max(0, s + rng.randint(-8, 8)), e + rng.randint(-8, 8)
                    s, e = (s2, e2) if e2 > s2 else (s, e)
                c = rng.randint(1, 11) if rng.random() < 0.1 else c
                spans += [(s, e, c)] * (2 if rng.random() < 0.1 else 1)
            for _ in range(rng.randint(0, 2)):
                s = rng.randrange(0, 200)
                spans.append((s, s + rng.randint(1, 30), rng.randint(1, 9)))
            rng.shuffle(spans)
            member[f"n{k}"] = spans
    return members


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lamar_mbr", type=Path, help="A copy of LAMAR's ensemble/mbr.py.")
    ap.add_argument("--notes", type=int, default=2600)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    single_doc = load_lamar(args.lamar_mbr)
    rng = random.Random(args.seed)
    fixed = [(0.1, 0.1, 0.34, 0.8), (0.3, 0.5, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5), (0.0,) * 4, (1.0,) * 4]
    settings = fixed + [tuple(round(rng.random(), 3) for _ in THRESHOLDS) for _ in range(5)]
    worst = 0
    for n_members in (2, 3, 4):
        members = random_members(rng, args.notes, n_members)
        for values in settings:
            params = dict(zip(THRESHOLDS, values, strict=True))
            ref = lamar_consensus(single_doc, members, params)
            diff = {mode: sum(ref[k] != v for k, v in consensus(members, ConsensusParams(mode=mode, **params)).items())
                    for mode in ("lamar", "medprog")}
            worst = max(worst, diff["lamar"])
            print(f"members={n_members} thresholds={'/'.join(f'{v:g}' for v in values):24s} notes={len(ref)} "
                  f"lamar-mode differs={diff['lamar']} medprog-mode differs={diff['medprog']} "
                  f"({100 * diff['medprog'] / len(ref):.1f}%)")
    print(f"lamar mode: {worst} notes differ from LAMAR at worst")
    return 1 if worst else 0


if __name__ == "__main__":
    raise SystemExit(main())
