"""LAMAR's pipeline on medprog's tagger: DFT → GRPO → pseudo-labels → Span-Cluster Consensus.

    make main                                   # the DFT stage: runs/meddec and runs/tagger
    python benchmarks/lamar_pipeline.py --run runs

Each stage starts from the one before it, as in LAMAR: GRPO (constrained rollouts, LoRA) from the
main job's DFT tagger; pseudo-labels from the GRPO model, on unlabelled notes of the
out-of-template generator drawn under another seed (``meddec-ood --seed 200``: never the
evaluation notes, seed 100); the consensus of the three, its thresholds tuned on dev (LAMAR tuned
on dev too, so its dev figure is optimistic; the out-of-template one is not), in medprog's mode
and in LAMAR's published one (`-o mode=lamar`). Every system is
evaluated on the dev split of ``runs/meddec`` (in template) and on the 60 out-of-template notes
(``meddec-ood --n 60 --seed 100``, only ever reported). The table gives LAMAR's leaderboard
columns for both sets, and each stage's gain over its input (the consensus: over the
pseudo-label model, the last single model) with a 95% paired bootstrap interval over notes
(`medprog.metrics.meddec_bootstrap`). The keyword rule learnt from the training notes is the
reference row. Every step is skipped when its output exists, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from medprog.data.meddec import SUBMISSION_FILE, load_meddec, read_submission  # noqa: E402
from medprog.metrics.meddec import MedDecScorer  # noqa: E402
from medprog.metrics.meddec_bootstrap import paired_bootstrap_meddec  # noqa: E402
from medprog.programs.tagger_baselines import keyword_baseline  # noqa: E402

MEDPROG = [sys.executable, "-m", "medprog"]
COLUMNS = ("span_f1", "token_f1", "base", "worst", "overall")


def sh(*args: str) -> None:
    print("+ medprog " + " ".join(args), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run([*MEDPROG, *args], check=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)


def once(done: Path, *args: str) -> None:
    """Run ``medprog ARGS`` unless ``done`` exists (what makes the script resumable)."""
    if not done.exists():
        sh(*args)


def stages(a: argparse.Namespace, out: Path) -> dict[str, Path]:
    """Compile every stage; returns the artifacts by stage name."""
    meddec, unlabelled = a.run / "meddec", out / "unlabelled-ood"
    once(a.ood, "data", "synth", "meddec-ood", "--out", str(a.ood), "--n", "60", "--seed", "100")
    once(unlabelled, "data", "synth", "meddec-ood", "--out", str(unlabelled), "--n", str(a.unlabelled_n),
         "--seed", "200")
    arts = {"dft": a.run / "tagger", "grpo": out / "grpo", "pseudolabel": out / "pseudolabel"}
    threads = ("-o", f"threads={a.threads}") if a.threads else ()
    once(arts["grpo"] / "program.json", "compile", "tagger", "--optimizer", "grpo", "--base", str(arts["dft"]),
         "--train", str(meddec), "--out", str(arts["grpo"]), "-o", f"steps={a.grpo_steps}", "-o", "batch_size=16",
         "-o", "num_generations=4", "-o", "limit=480", "-o", "learning_rate=5e-4", *threads)
    once(arts["pseudolabel"] / "program.json", "compile", "tagger", "--optimizer", "pseudolabel", "--base",
         str(arts["grpo"]), "--train", str(meddec), "--out", str(arts["pseudolabel"]), "-o",
         f"unlabelled={unlabelled}", "-o", f"max_steps={a.pl_steps}", "-o", "time_budget_s=5000", *threads)
    return arts


def evaluations(a: argparse.Namespace, out: Path, arts: dict[str, Path]) -> dict[str, dict[str, Path]]:
    """Every stage's submission on dev and out of template, the consensus's included."""
    sets = {"dev": (a.run / "meddec", "val"), "ood": (a.ood, "test")}
    subs: dict[str, dict[str, Path]] = {}
    for name, art in arts.items():
        for key, (data, split) in sets.items():
            run = out / f"eval-{name}-{key}"
            once(run / "metrics.json", "eval", str(art), "--data", str(data), "--split", split, "--out", str(run),
                 "--concurrency", "8", "--no-progress")
            subs.setdefault(name, {})[key] = run / SUBMISSION_FILE
    members = [str(out / f"eval-{name}-dev") for name in arts]
    for mode in ("medprog", "lamar"):
        name = "consensus" if mode == "medprog" else "consensus-lamar"
        once(out / name / "program.json", "compile", "tagger", "--optimizer", "ensemble", "--members", *members,
             "--dev", str(a.run / "meddec"), "--out", str(out / name), "-o", f"mode={mode}")
        for key in sets:
            sub = out / f"{name}-{key}" / SUBMISSION_FILE
            once(sub, "ensemble-apply", str(out / name), *[str(out / f"eval-{m}-{key}") for m in arts],
                 "--out", str(sub))
            subs.setdefault(name, {})[key] = sub
    return subs


def table(a: argparse.Namespace, subs: dict[str, dict[str, Path]]) -> str:
    notes = {"dev": load_meddec(a.run / "meddec", "val"), "ood": load_meddec(a.ood, "test")}
    scorers = {k: MedDecScorer(v) for k, v in notes.items()}
    keyword = keyword_baseline(load_meddec(a.run / "meddec", "train"))
    preds = {"keyword rule": {k: keyword(v) for k, v in notes.items()},
             **{name: {k: read_submission(p) for k, p in by_set.items()} for name, by_set in subs.items()}}
    inputs = {"grpo": "dft", "pseudolabel": "grpo", "consensus": "pseudolabel", "consensus-lamar": "pseudolabel"}
    head = ["system", "input"] + [f"{s} {c}" for s in ("dev", "ood") for c in COLUMNS] + [
        "dev gain span F1 [95% CI]", "dev gain token F1", "ood gain span F1 [95% CI]", "ood gain token F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, by_set in preds.items():
        cells = [name, inputs.get(name, "–")]
        for key in ("dev", "ood"):
            m = scorers[key].score(by_set[key])
            cells += [f"{m[c]:.3f}" for c in COLUMNS]
        for key in ("dev", "ood"):
            if name in inputs:
                d = paired_bootstrap_meddec(scorers[key], preds[inputs[name]][key], by_set[key], seed=a.seed)
                cells += [d["span_f1"].cell(), d["token_f1"].cell()]
            else:
                cells += ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs"), help="holds meddec/ and tagger/ (from `make main`)")
    ap.add_argument("--out", type=Path, default=None, help="default: RUN/lamar")
    ap.add_argument("--ood", type=Path, default=None, help="out-of-template notes (default: RUN/ood, made if absent)")
    ap.add_argument("--unlabelled-n", type=int, default=40, help="unlabelled out-of-template notes (seed 200)")
    ap.add_argument("--grpo-steps", type=int, default=30)
    ap.add_argument("--pl-steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for training (default: idle cores)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    a = ap.parse_args(argv)
    a.ood = a.ood or a.run / "ood"
    out = a.out or a.run / "lamar"
    for need in (a.run / "meddec", a.run / "tagger" / "program.json"):
        if not need.exists():
            ap.error(f"{need} is missing: run `make main` first (it writes the DFT stage)")
    out.mkdir(parents=True, exist_ok=True)
    subs = evaluations(a, out, stages(a, out))
    text = table(a, subs)
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    (out / "submissions.json").write_text(json.dumps({k: {s: str(p) for s, p in v.items()} for k, v in subs.items()},
                                                     indent=1), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
