"""DFT training steps in a fixed wall-clock budget at several torch thread counts, on the machine as it is.

    .venv/bin/python benchmarks/training_threads.py                       # auto, 1 and 2 threads, 25 s each
    .venv/bin/python benchmarks/training_threads.py --threads 1 2 --busy 1  # with one CPU-bound neighbour

Trains the from-scratch tagger (`train_dft`, choice objective, batch 1) on the sentence windows of
one annotated note for ``--budget`` seconds per setting, each in a fresh process, and prints the
steps it ran, the thread count ``auto`` picked (`medprog.engines.threads.idle_cpus`:
the CPUs idle when training starts) and the 1-minute load average. ``--busy N`` starts N
CPU-bound neighbour processes for the whole measurement.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile

NOTE = ("History of Present Illness:\n60 yo M with CHF.  Started on diltiazem 30 mg BID.\n"
        "Blood cultures were sent. Please stop taking aspirin. Follow up with Dr. [**Name**] in 2 weeks.")
GOLD = ("History of Present Illness:\n60 yo M with CHF.  <drug_decision>Started on diltiazem 30 mg BID"
        "</drug_decision>.\n<gather_info>Blood cultures were sent</gather_info>. Please <drug_decision>stop "
        "taking aspirin</drug_decision>. <contact_related>Follow up with Dr. [**Name**] in 2 weeks"
        "</contact_related>.")


def one_run(threads: str, budget: float) -> dict:
    """Train once at ``threads`` (``auto`` or a number) for ``budget`` seconds; steps and settings."""
    import dspy
    import torch

    from medprog.engines.threads import idle_cpus
    from medprog.optimizers.dft_config import DFTConfig
    from medprog.optimizers.dft_train import train_dft
    from medprog.programs.tagger import train_examples
    from medprog.signatures.tagging import TagDecisions

    n = idle_cpus() if threads == "auto" else int(threads)
    torch.set_num_threads(n)
    examples = train_examples([dspy.Example(id="n1", note=NOTE, tagged=GOLD).with_inputs("note")],
                              {"window_chars": 60})
    cfg = DFTConfig(time_budget_s=budget, batch_size=1, max_epochs=100_000, log_every=1)
    with tempfile.TemporaryDirectory() as out:
        report = train_dft(TagDecisions, examples, out, cfg, log=lambda _: None)
    return {"threads": threads, "torch_threads": n, "steps": report["steps"],
            "train_wall_s": round(report["train_wall_s"], 1), "load1": round(os.getloadavg()[0], 1)}


def _spin() -> None:  # pragma: no cover - a neighbour process
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", nargs="+", default=["auto", "1", "2"])
    ap.add_argument("--budget", type=float, default=25.0)
    ap.add_argument("--busy", type=int, default=0, help="CPU-bound neighbour processes")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.budget)))
        return
    neighbours = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in neighbours:
        p.start()
    try:
        for t in args.threads:
            out = subprocess.run([sys.executable, __file__, "--one", t, "--budget", str(args.budget)],
                                 capture_output=True, text=True, check=True)
            print(out.stdout.strip().splitlines()[-1], flush=True)
    finally:
        for p in neighbours:
            p.terminate()


if __name__ == "__main__":
    main()
