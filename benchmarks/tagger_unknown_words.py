"""How a tagger fares when the words around the decisions are ones its training notes never use.

    python benchmarks/tagger_unknown_words.py --data runs/meddec --out runs/unknown-words \\
        --artifact runs/tagger --artifact runs/tagger-noise

Writes a copy of a MedDec split (``--split``, default ``val``) in which each word outside every
gold span is replaced, at ``--rate``, by a word of SmolLM2's tokenizer vocabulary (a general
English vocabulary, and not the one `medprog.optimizers.word_noise` trains with), the spans kept
on their own words; then evaluates every artifact on the first ``--limit`` notes of the clean and
the perturbed split and prints span and token F1, span precision and the spurious spans per note.
A probe built from the training generator's own dev notes: it isolates one cause of failure out
of template (unknown words) without looking at any out-of-template note. Evaluations resume.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from medprog.data.meddec import read_split  # noqa: E402
from medprog.engines.embedded import resolve  # noqa: E402
from medprog.engines.tagging import Span  # noqa: E402
from medprog.optimizers.word_noise import noise_text  # noqa: E402


def smollm2_words() -> tuple[str, ...]:
    """Whole-word entries (a leading space, 4+ ASCII letters) of SmolLM2's tokenizer vocabulary."""
    model = resolve("smollm2")
    if model is None or not (Path(model) / "tokenizer.json").is_file():
        sys.exit("SmolLM2 is not prepared: run `medprog models prepare smollm2`")
    vocab = json.loads((Path(model) / "tokenizer.json").read_text())["model"]["vocab"]
    return tuple(w[1:] for w in vocab if w.startswith("Ġ") and len(w) > 4 and w[1:].isascii() and w[1:].isalpha())


def perturbed_copy(src: Path, dst: Path, split: str, rate: float, seed: int) -> None:
    """``dst``: ``src`` with the notes of ``split`` rewritten (`noise_text`), offsets moved."""
    if dst.exists():
        return
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    rng, words, wanted = random.Random(seed), smollm2_words(), set(read_split(tmp, split))
    for path in sorted((tmp / "data").glob("*.json")):
        ann = json.loads(path.read_text())
        note_id = ann["discharge_summary_id"]
        if note_id not in wanted:
            continue
        text_path = tmp / "raw_text" / f"{note_id}.txt"
        spans = [Span(start=a["start_offset"], end=a["end_offset"], tag="x") for a in ann["annotations"]]
        text, moved = noise_text(text_path.read_text(), spans, rate, rng, words)
        for a, s in zip(ann["annotations"], moved):
            a["start_offset"], a["end_offset"], a["decision"] = s.start, s.end, text[s.start:s.end]
        text_path.write_text(text)
        path.write_text(json.dumps(ann, indent=2))
    tmp.rename(dst)


def evaluate(artifact: Path, data: Path, split: str, out: Path, limit: int) -> dict:
    if not (out / "metrics.json").is_file():
        subprocess.run([sys.executable, "-m", "medprog", "eval", str(artifact), "--data", str(data), "--split", split,
                        "--out", str(out), "--limit", str(limit), "--concurrency", "8", "--resume", "--no-cache",
                        "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a MedDec directory (the training generator's)")
    p.add_argument("--split", default="val")
    p.add_argument("--artifact", type=Path, action="append", required=True, help="a tagger artifact (repeatable)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rate", type=float, default=0.3, help="fraction of the words outside spans replaced")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--limit", type=int, default=20, help="notes evaluated")
    a = p.parse_args()
    if len({art.name for art in a.artifact}) < len(a.artifact):
        p.error("artifacts need distinct folder names (their evaluations are kept under --out by name)")
    perturbed = a.out / f"data-rate{a.rate}-seed{a.seed}"
    perturbed_copy(a.data, perturbed, a.split, a.rate, a.seed)
    print(f"{a.split} split of {a.data}, first {a.limit} notes; words outside the gold spans replaced at rate "
          f"{a.rate} (seed {a.seed}) by SmolLM2 vocabulary words\n")
    print("| artifact | clean span F1 | clean token F1 | perturbed span F1 | perturbed token F1 | "
          "perturbed span precision | perturbed spurious spans / note |")
    print("|---|---|---|---|---|---|---|")
    for art in a.artifact:
        name = art.name
        clean = evaluate(art, a.data, a.split, a.out / f"{name}-clean", a.limit)
        pert = evaluate(art, perturbed, a.split, a.out / f"{name}-rate{a.rate}-seed{a.seed}", a.limit)
        print(f"| {art} | {clean['span_f1']:.3f} | {clean['token_f1']:.3f} | {pert['span_f1']:.3f} | "
              f"{pert['token_f1']:.3f} | {pert['span_precision']:.3f} | {pert['span_fp'] / pert['n_notes']:.1f} |")


if __name__ == "__main__":
    main()
