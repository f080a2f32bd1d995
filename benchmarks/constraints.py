"""Constraint build time and constrained decoding speed, per backend — prints a table.

Kinds: (a) a JSON schema with an enum, a list and a nested object; (b) the `TaggedText`
constraint over a 2,000- and a 20,000-character note with the 9 MedDec tags. Vocabularies:
a small corpus-trained BPE (2,048) and litellm's bundled 129k DeepSeek tokenizer, each on a
tiny random Qwen2 (decode speed is measured on the small-vocabulary model, as the target asks).
Backends: outlines_core, xgrammar, llguidance (JSON schema; for tagging, the regex a grammar
engine can express) and medprog's own tagging automaton. Each cell runs in a fresh process
with a time limit; decode speed is tokens/s constrained ÷ unconstrained, same model, same run.

Targets: tagging constraint for a 20,000-character note builds in < 1 s at 129k vocabulary;
JSON constraints < 0.5 s; constrained decoding ≥ 0.67x unconstrained on the small model.

    python benchmarks/constraints.py [--timeout 120] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BACKENDS = ["outlines_core", "xgrammar", "llguidance"]


def deepseek_tokenizer_file() -> Path:
    import litellm

    return Path(litellm.__file__).parent / "litellm_core_utils" / "tokenizers" / "deepseek_tokenizer.json"


def build_models(root: Path) -> dict[str, Path]:
    """The two benchmark models (random weights), built once."""
    from transformers import PreTrainedTokenizerFast

    from medprog.engines.small_model import (CHAT_TEMPLATE, SmallModelConfig, build_model, build_tokenizer,
                                             tag_tokens)
    from medprog.signatures.tagging import DECISION_TAGS

    cfg = SmallModelConfig(hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128, max_positions=16384)
    out = {}
    corpus = [n for n in notes_text(60_000).split("\n\n")]
    small = build_tokenizer(corpus, 2048, DECISION_TAGS)
    big = PreTrainedTokenizerFast(tokenizer_file=str(deepseek_tokenizer_file()), eos_token="<｜end▁of▁sentence｜>",
                                  pad_token="<｜end▁of▁sentence｜>")
    big.add_tokens(tag_tokens(DECISION_TAGS))
    big.chat_template = CHAT_TEMPLATE
    for name, tok in (("small", small), ("129k", big)):
        path = root / name
        tok.save_pretrained(path)
        build_model(tok, cfg).save_pretrained(path)
        out[name] = path
    return out


def notes_text(chars: int) -> str:
    """At least ``chars`` characters of synthetic discharge summaries, cut at a note boundary."""
    from medprog.data.meddec import load_meddec
    from medprog.data.synth_meddec import synth_meddec

    with tempfile.TemporaryDirectory() as d:
        synth_meddec(Path(d) / "m", n=max(8, chars // 600), seed=11)
        notes = [n.text for n in load_meddec(Path(d) / "m")]
    text = ""
    for n in notes:
        if len(text) >= chars:
            break
        text += n + "\n\n"
    return text[:chars].rsplit(" ", 1)[0]


class Expert(BaseModel):
    role: str
    hierarchy: Literal["independent", "lead", "member"]


class Team(BaseModel):
    name: str
    lead: Expert
    members: list[Expert]


def json_schema() -> dict:
    """Schema with an enum, a list and nested objects, as medprog builds it for a signature."""
    import dspy

    from medprog.engines.constraints import constraint_for
    from medprog.signatures import Signature

    class Plan(Signature):
        question: str = dspy.InputField()
        complexity: Literal["basic", "intermediate", "advanced"] = dspy.OutputField()
        teams: list[Team] = dspy.OutputField()

    return constraint_for(Plan, {"question": "q"}).json_schema


def cell(model: str, kind: str, backend: str, decode: bool) -> dict:
    """Build (and optionally decode with) one constraint; runs inside a child process."""
    import torch
    from transformers import LogitsProcessorList

    from medprog.engines.constraints import TaggedConstraint, json_whitespace_free, tagged_regex
    from medprog.engines.local import LocalEngine, end_of_turn_id
    from medprog.engines.tagging_processor import TaggingLogitsProcessor
    from medprog.signatures.tagging import DECISION_TAGS

    torch.set_num_threads(1)
    engine = LocalEngine(model)
    tok = engine.tokenizer
    prompt = torch.tensor([tok("note:", add_special_tokens=False)["input_ids"]])
    t0 = time.perf_counter()
    if kind == "json":
        from outlines.backends import get_json_schema_logits_processor

        schema = json_whitespace_free(json_schema())
        proc = get_json_schema_logits_processor(backend, engine._outlines(), schema,
                                                **({"whitespace_pattern": ""} if backend == "outlines_core" else {}))
        max_new = 256
    else:
        text = notes_text(int(kind.split("_")[1]))
        c = TaggedConstraint(text=text, tags=list(DECISION_TAGS))
        if backend == "medprog":
            automaton = engine.tag_automaton(c)
            proc = TaggingLogitsProcessor([automaton], prompt.shape[1])
            max_new = sum(map(len, automaton.layout.unit_tokens)) + 8
        else:
            from outlines.backends import get_regex_logits_processor

            proc = get_regex_logits_processor(backend, engine._outlines(), tagged_regex(c))
            max_new = len(tok(text, add_special_tokens=False)["input_ids"]) + 8
    build_s = time.perf_counter() - t0
    result = {"build_s": build_s}
    if decode:
        n = min(max_new, 400)

        def run(processors: list) -> tuple[int, float]:
            t = time.perf_counter()
            with torch.inference_mode():
                out = engine.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                            do_sample=False, use_cache=True, pad_token_id=tok.pad_token_id,
                                            eos_token_id=end_of_turn_id(tok), logits_processor=LogitsProcessorList(processors),
                                            **({} if processors else {"min_new_tokens": n}))
            return out.shape[1] - prompt.shape[1], time.perf_counter() - t

        run([])  # warm-up
        base_n, base_s = run([])
        con_n, con_s = run([proc])
        result.update(tokens=con_n, tok_s=con_n / con_s, base_tok_s=base_n / base_s,
                      ratio=(con_n / con_s) / (base_n / base_s))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per cell")
    ap.add_argument("--quick", action="store_true", help="skip the 20,000-character note")
    ap.add_argument("--cell", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        model, kind, backend, decode = args.cell
        print(json.dumps(cell(model, kind, backend, decode == "1")))
        return
    kinds = ["json", "tagged_2000"] + ([] if args.quick else ["tagged_20000"])
    with tempfile.TemporaryDirectory() as d:
        models = build_models(Path(d))
        rows = []
        for vocab, path in models.items():
            for kind in kinds:
                for backend in BACKENDS + (["medprog"] if kind != "json" else []):
                    decode = vocab == "small"
                    cmd = [sys.executable, __file__, "--cell", str(path), kind, backend, "1" if decode else "0"]
                    try:
                        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                        res = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {
                            "error": (p.stderr.strip().splitlines() or ["failed"])[-1][:60]}
                    except subprocess.TimeoutExpired:
                        res = {"error": f"> {args.timeout:.0f} s"}
                    rows.append((vocab, kind, backend, res))
                    print(f"  {vocab:6} {kind:13} {backend:14} {json.dumps(res)}", file=sys.stderr, flush=True)
    print(f"\n{'vocab':6} {'constraint':13} {'backend':14} {'build s':>9} {'tok/s':>8} {'unconstr':>9} {'ratio':>6}")
    for vocab, kind, backend, r in rows:
        if "error" in r:
            print(f"{vocab:6} {kind:13} {backend:14} {r['error']:>9}")
            continue
        dec = (f"{r['tok_s']:8.1f} {r['base_tok_s']:9.1f} {r['ratio']:6.2f}" if "ratio" in r else f"{'':8} {'':9} {'':6}")
        print(f"{vocab:6} {kind:13} {backend:14} {r['build_s']:9.3f} {dec}")


if __name__ == "__main__":
    main()
