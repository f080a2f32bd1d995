"""Constraint build time, mask time and constrained decoding speed, per backend — prints two tables.

Build table: every JSON schema the package's signatures declare, and the `TaggedText`
constraint over a 2,000- and a 20,000-character note with the 9 MedDec tags, at SmolLM2's
49k vocabulary and litellm's bundled 129k DeepSeek vocabulary. Backends: llguidance (medprog's
default, its matchers driven by `medprog.engines.grammar_processor`), xgrammar and outlines_core
(through outlines' processors, as ``json_backend`` selects them), and for tagging medprog's own
automaton (the others get the regex a grammar engine can express). Each cell runs in a fresh
process with a CPU-time and memory limit; "build" includes llguidance's first mask (its compile is
lazy); ``ms/mask`` is the processor's own time per step over a short walk.

Decode table: constrained ÷ unconstrained tokens per CPU-second at equal length (prefill and first
mask left out), for one or more JSON schemas per program (``--schemas``) and tagging, batch 1 and
8, on the tiny random model (2k vocabulary) and on SmolLM2-135M when it is prepared (``medprog
models prepare smollm2``); each cell reads "ratio (steps decoded)".

    python benchmarks/constraints.py [--only build|decode] [--schemas all] [--reps 2] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BACKENDS = ["llguidance", "xgrammar", "outlines_core"]
SMOLLM2 = Path(os.environ.get("MEDPROG_SMOLLM2", Path.home() / ".cache/medprog/models/smollm2"))
MEMORY_LIMIT = 4 << 30
CLOCK = time.process_time
"""Times are this process's CPU time: on a shared machine wall time measures the neighbours. Torch
runs on one thread, so CPU time is what the same work takes on an idle core."""


def deepseek_tokenizer_file() -> Path:
    import litellm

    return Path(litellm.__file__).parent / "litellm_core_utils" / "tokenizers" / "deepseek_tokenizer.json"


def notes_text(chars: int) -> str:
    """At least ``chars`` characters of synthetic discharge summaries, cut at a word boundary."""
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


def program_schemas() -> dict[str, dict]:
    """Name → JSON schema for every declared signature whose output is constrained as JSON."""
    import medprog.signatures as pkg
    from medprog.engines.constraints import constraint_for, output_mode
    from medprog.signatures import Signature

    out = {}
    for mod in pkgutil.iter_modules(pkg.__path__):
        for obj in vars(importlib.import_module(f"medprog.signatures.{mod.name}")).values():
            if isinstance(obj, type) and issubclass(obj, Signature) and obj is not Signature and obj.output_fields \
                    and output_mode(obj) == "json":
                out[obj.__qualname__] = constraint_for(obj, {k: "x" for k in obj.input_fields}).json_schema
    return dict(sorted(out.items()))


def build_models(root: Path) -> dict[str, Path]:
    """Random tiny models on three vocabularies: a corpus-trained 2k BPE, SmolLM2's 49k, DeepSeek's 129k."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from medprog.engines.small_model import CHAT_TEMPLATE, SmallModelConfig, build_model, build_tokenizer
    from medprog.signatures.tagging import DECISION_TAGS

    cfg = SmallModelConfig(hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128, max_positions=16384)
    toks = {"2k": build_tokenizer(notes_text(60_000).split("\n\n"), 2048, DECISION_TAGS)}
    if (SMOLLM2 / "tokenizer.json").is_file():
        toks["49k"] = AutoTokenizer.from_pretrained(SMOLLM2)
    big = PreTrainedTokenizerFast(tokenizer_file=str(deepseek_tokenizer_file()), eos_token="<｜end▁of▁sentence｜>",
                                  pad_token="<｜end▁of▁sentence｜>")
    big.chat_template = CHAT_TEMPLATE
    toks["129k"] = big
    out = {}
    for name, tok in toks.items():
        tok.save_pretrained(root / name)
        build_model(tok, cfg).save_pretrained(root / name)
        out[name] = root / name
    return out


_BACKENDS: dict = {}  # (engine id, name) -> grammar backend, built once like the engine's own


def grammar_backend(engine, name: str):
    """The engine's grammar backend called ``name`` (its tokenizer views are built once per engine)."""
    from medprog.engines.backends import get_backend

    key = (id(engine), name)
    if key not in _BACKENDS:
        _BACKENDS[key] = get_backend(name, engine.model, engine.tokenizer)
    return _BACKENDS[key]


def make_processor(engine, c, backend: str, batch: int, prompt_len: int):
    """The logits processor the local engine uses for ``c`` with ``backend`` (tagging: or a regex grammar)."""
    from medprog.engines.constraints import TaggedConstraint, tagged_regex
    from medprog.engines.grammar_processor import GrammarLogitsProcessor

    if not isinstance(c, TaggedConstraint) or backend == "medprog":
        if backend != "medprog":
            engine.grammar = grammar_backend(engine, backend)
        (proc,) = engine.logits_processors([c] * batch, prompt_len)
        return proc
    if backend == "llguidance":
        import llguidance

        grammar = llguidance.grammar_from("regex", tagged_regex(c))
        return GrammarLogitsProcessor(grammar_backend(engine, "llguidance").ll_tokenizer(), [grammar] * batch,
                                      prompt_len)
    from outlines.backends import get_regex_logits_processor

    return get_regex_logits_processor(backend, grammar_backend(engine, "outlines_core").outlines_model(),
                                      tagged_regex(c))


def walk_ms(proc, vocab: int, prompt_len: int, steps: int) -> float:
    """Mean ms per processor call over a walk choosing a random admissible token each step."""
    import torch

    ids, spent, n = torch.zeros(1, prompt_len, dtype=torch.long), 0.0, 0
    for _ in range(steps):
        scores = torch.randn(1, vocab)
        t = CLOCK()
        masked = proc(ids, scores)
        spent += CLOCK() - t
        n += 1
        token = int(masked.argmax())
        if not torch.isfinite(masked[0, token]):
            break
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return 1000 * spent / max(n, 1)


def build_cell(model: str, kind: str, backend: str, cpu_limit: float) -> None:
    """Build each constraint of ``kind`` and walk a few masks; prints a JSON line after each."""
    import torch

    from medprog.engines.constraints import JsonConstraint, TaggedConstraint
    from medprog.engines.local import LocalEngine
    from medprog.signatures.tagging import DECISION_TAGS

    torch.set_num_threads(1)
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_limit), int(cpu_limit) + 5))
    engine = LocalEngine(model, cache=None)
    vocab = engine.model.config.vocab_size
    if kind == "json":
        cs = {k: JsonConstraint(json_schema=v) for k, v in sorted(program_schemas().items(), key=lambda kv: len(
            json.dumps(kv[1])))}
    else:
        cs = {kind: TaggedConstraint(text=notes_text(int(kind.split("_")[1])), tags=list(DECISION_TAGS))}
    trivial = JsonConstraint(json_schema={"type": "boolean"}) if kind == "json" or backend != "medprog" \
        else TaggedConstraint(text="a b", tags=list(DECISION_TAGS))
    t = CLOCK()
    make_processor(engine, trivial, backend, 1, 1)  # once per tokenizer: the backend's view of the vocabulary
    setup_ms = 1000 * (CLOCK() - t)
    builds, masks = [], []
    for name, c in cs.items():
        t = CLOCK()
        proc = make_processor(engine, c, backend, 1, 1)
        builds.append(1000 * (CLOCK() - t))
        masks.append(walk_ms(proc, vocab, 1, 24))
        print(json.dumps({"n": len(builds), "of": len(cs), "setup_ms": setup_ms, "build_ms_max": max(builds),
                          "build_ms_median": statistics.median(builds), "first_build_ms": builds[0],
                          "mask_ms": statistics.mean(masks), "slowest": name if builds[-1] == max(builds) else None}),
              flush=True)


DECODE_SCHEMAS = ["RecruitExperts", "PlanTeams", "ExpertAnswer", "ReasonThenChoose", "ClinicalReasoning",
                  "DoctorTurn", "HostReview", "AnalyseNote"]
"""At least one schema per program: mdagents, mcq, creason, hospital, clh (``--schemas all``: every one)."""


def decode_rows(model: str, label: str, batches: list[int], new_tokens: int, schemas: list[str],
                reps: int) -> list[dict]:
    """Constrained ÷ unconstrained decode speed per schema, backend and batch, at equal length.

    Each constrained run is compared with the unconstrained runs of the same batch over its own
    number of steps (the prefill, the same in both, is left out: a JSON that closes after 20 tokens
    is not charged for amortizing it over fewer tokens). ``reps`` interleaved rounds; each side's
    rate is its median step over all rounds, since the neighbours on a loaded machine slow single
    steps (on the tiny model a step is ~1 ms, and whole-run means moved by ±30%).
    """
    import torch

    from medprog.engines.constraints import JsonConstraint, TaggedConstraint
    from medprog.engines.local import LocalEngine, render_prompt
    from medprog.signatures.tagging import DECISION_TAGS

    torch.set_num_threads(1)
    engine = LocalEngine(model, cache=None)
    declared = program_schemas()
    # outlines_core builds nested, bounded schemas for minutes: on the tiny model, one flat schema
    cases = [(f"json {n}", JsonConstraint(json_schema=declared[n]), ["llguidance", "xgrammar"] + (
        ["outlines_core"] if label.startswith("tiny") and n == "ExpertAnswer" else [])) for n in schemas]
    cases.append(("tagged 2000", TaggedConstraint(text=notes_text(2000), tags=list(DECISION_TAGS)), ["medprog"]))
    prompt = render_prompt(engine.tokenizer, [{"role": "user", "content": "Write the answer for this patient note."}])
    rows = []
    for batch in batches:
        ids = torch.tensor([prompt] * batch)
        step_stamps(engine, ids, [], new_tokens)  # warm-up
        bases, runs = [], {}
        for _ in range(reps):
            bases.append(step_stamps(engine, ids, [], new_tokens))
            for name, c, backends in cases:
                for backend in backends:
                    proc = make_processor(engine, c, backend, batch, ids.shape[1])
                    runs.setdefault((name, backend), []).append(step_stamps(engine, ids, [proc], new_tokens))
        bases.append(step_stamps(engine, ids, [], new_tokens))
        for (name, backend), stamps in runs.items():
            steps = min(len(s) for s in stamps) - 1
            rate, base = decode_rate(stamps, batch, steps), decode_rate(bases, batch, steps)
            rows.append({"model": label, "batch": batch, "constraint": name, "backend": backend, "steps": steps + 1,
                         "tok_s": rate, "base_tok_s": base, "ratio": rate / base})
            print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def decode_rate(runs: list[list[float]], batch: int, steps: int) -> float:
    """Tokens per CPU-second of the median step among the ``steps`` steps after the first of each run:
    a step is its forward pass, sampling and processors; the prefill and the first mask (a lazy
    grammar's compile: the build table's) are left out."""
    return batch / statistics.median(b - a for s in runs for a, b in zip(s[:steps], s[1:steps + 1]))


class _Stamp:
    """A logits processor recording the process's CPU time at each step (put last, after the constraint)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, input_ids, scores):
        self.stamps.append(CLOCK())
        return scores


def step_stamps(engine, ids, processors: list, new_tokens: int) -> list[float]:
    """CPU time after each decoding step's processors, greedy; unconstrained runs are held to the full length."""
    import torch
    from transformers import LogitsProcessorList

    from medprog.engines.local import end_of_turn_id

    tok, stamp = engine.tokenizer, _Stamp()
    with torch.inference_mode():
        engine.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
            use_cache=True, pad_token_id=tok.pad_token_id, eos_token_id=end_of_turn_id(tok),
            logits_processor=LogitsProcessorList([*processors, stamp]),
            **({} if processors else {"min_new_tokens": new_tokens}))
    return stamp.stamps


def run_build_cells(models: dict[str, Path], kinds: list[str], cpu_limit: float) -> list[tuple]:
    rows = []
    for vocab in ("49k", "129k"):
        if vocab not in models:
            continue
        for kind in kinds:
            for backend in BACKENDS + (["medprog"] if kind != "json" else []):
                cmd = [sys.executable, __file__, "--build-cell", str(models[vocab]), kind, backend, str(cpu_limit)]
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True, timeout=6 * cpu_limit)
                    out, err = p.stdout, (p.stderr.strip().splitlines() or [""])[-1]
                    err = f"> {cpu_limit:.0f} s CPU" if p.returncode == -signal.SIGXCPU else err
                except subprocess.TimeoutExpired as e:
                    out, err = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), \
                        f"> {6 * cpu_limit:.0f} s wall"
                lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
                res = lines[-1] if lines else {}
                if not lines or res["n"] < res["of"]:
                    res = {**res, "error": err[:50] or "failed"}
                rows.append((vocab, kind, backend, res))
                print(f"  {vocab} {kind} {backend} {json.dumps(res)}", file=sys.stderr, flush=True)
    return rows


def print_tables(build: list[tuple], decode: list[dict]) -> None:
    if build:
        print_build(build)
    if decode:
        print_decode(decode)


def print_build(build: list[tuple]) -> None:
    print(f"\n{'vocab':5} {'constraint':18} {'backend':13} {'setup ms':>9} {'built':>7} {'max ms':>9} {'median ms':>9} "
          f"{'ms/mask':>8}")
    for vocab, kind, backend, r in build:
        label = "program schemas" if kind == "json" else kind.replace("_", " ") + " chars"
        done = f"{r.get('n', 0)}/{r.get('of', '?')}"
        setup = f"{r['setup_ms']:9.0f}" if "setup_ms" in r else f"{'':9}"
        if "build_ms_max" not in r:
            print(f"{vocab:5} {label:18} {backend:13} {setup} {done:>7}   {r.get('error', '')}")
            continue
        note = f"  ({r['error']})" if "error" in r else ""
        print(f"{vocab:5} {label:18} {backend:13} {setup} {done:>7} {r['build_ms_max']:9.1f} "
              f"{r['build_ms_median']:9.1f} "
              f"{r['mask_ms']:8.3f}{note}")


def print_decode(decode: list[dict]) -> None:
    """One line per model, batch and constraint; per backend: constrained ÷ unconstrained (steps decoded)."""
    backends = [b for b in BACKENDS + ["medprog"] if any(r["backend"] == b for r in decode)]
    print(f"\n{'model':12} {'batch':>5} {'constraint':22} {'unconstr':>9} " + " ".join(f"{b:>14}" for b in backends))
    lines: dict[tuple, dict[str, dict]] = {}
    for r in decode:
        lines.setdefault((r["model"], r["batch"], r["constraint"]), {})[r["backend"]] = r
    for (model, batch, constraint), by in lines.items():
        cells = [f"{by[b]['ratio']:.2f} ({by[b]['steps']:>2})" if b in by else "" for b in backends]
        base = next(iter(by.values()))["base_tok_s"]
        print(f"{model:12} {batch:5d} {constraint:22} {base:9.1f} " + " ".join(f"{c:>14}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-limit", type=float, default=20.0, help="CPU seconds per build cell")
    ap.add_argument("--quick", action="store_true", help="skip the 20,000-character note and SmolLM2 decoding")
    ap.add_argument("--only", choices=["build", "decode"], help="run one of the two tables")
    ap.add_argument("--schemas", default=",".join(DECODE_SCHEMAS),
                    help="decode table's JSON schemas, comma-separated, or 'all' (default: one or more per program)")
    ap.add_argument("--new-tokens", type=int, default=48, help="tokens per decode run")
    ap.add_argument("--reps", type=int, default=2, help="interleaved decode rounds (best counts)")
    ap.add_argument("--json-out", type=Path, help="also write every row as JSON here")
    ap.add_argument("--build-cell", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_cell:
        build_cell(*args.build_cell[:3], float(args.build_cell[3]))
        return
    kinds = ["json", "tagged_2000"] + ([] if args.quick else ["tagged_20000"])
    schemas = sorted(program_schemas()) if args.schemas == "all" else args.schemas.split(",")
    build, decode = [], []
    with tempfile.TemporaryDirectory() as d:
        models = build_models(Path(d))
        if args.only != "decode":
            build = run_build_cells(models, kinds, args.cpu_limit)
        if args.only != "build":
            decode = decode_rows(str(models["2k"]), "tiny 2k", [1, 8], args.new_tokens, schemas, 3 * args.reps)
            if (SMOLLM2 / "config.json").is_file() and not args.quick:
                decode += decode_rows(str(SMOLLM2), "SmolLM2 49k", [1, 8], args.new_tokens, schemas, args.reps)
    if args.json_out:
        args.json_out.write_text(json.dumps({"build": build, "decode": decode}, indent=1))
    print_tables(build, decode)


if __name__ == "__main__":
    main()
