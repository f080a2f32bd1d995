"""Helpers for the multi-agent program tests (mdagents, hospital, clh, creason).

- `ScriptedEngine`: a real `Engine` (so calls go through the adapter, the constraint and the
  ledger) whose completions come from a script: per call, the script may return a dict merged
  into a schema-valid default output, a bare choice, or None for the default. Every prompt
  and constraint is kept, and every reply is checked against its constraint.
- `tiny_engine()`: a tiny random local model (real constrained decoding), built once per process.
- `vllm_engine()`: an `openai:` engine on a real vLLM server (``.vllm-venv``), started once per
  process for the slow tests, serving a tiny model trained for a few seconds on scripted runs
  of the four agent programs (so it writes short JSON).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import dspy  # noqa: E402

from medprog.engines.accounting import current_step  # noqa: E402
from medprog.engines.base import Completion, Engine, Sampling  # noqa: E402
from medprog.engines.constraints import ChoiceConstraint, JsonConstraint, check_text  # noqa: E402
from medprog.signatures.adapter import MedprogAdapter  # noqa: E402

Script = Callable[["Call"], Any]


class Call:
    """What the script sees of one call."""

    def __init__(self, messages: list[dict[str, str]], constraint: Any, step: str) -> None:
        self.messages, self.constraint, self.step = messages, constraint, step
        self.system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        self.user = messages[-1]["content"]

    @property
    def title(self) -> str:
        """The signature name (JSON outputs) or ``choice``."""
        if isinstance(self.constraint, JsonConstraint):
            return self.constraint.json_schema.get("title", "").removesuffix("Output")
        return "choice"

    @property
    def choices(self) -> list[str]:
        return self.constraint.choices if isinstance(self.constraint, ChoiceConstraint) else []

    def schema_field(self, name: str) -> dict:
        return self.constraint.json_schema["properties"][name]

    def allowed(self, name: str) -> list:
        """The values a narrowed ``Literal`` field (or list of them) may take."""
        f = self.schema_field(name)
        f = f.get("items", f)
        return f["enum"] if "enum" in f else [f["const"]]


def default_for(schema: dict, root: dict) -> Any:
    """A minimal value valid under ``schema`` (first enum value, shortest lists, "x" strings of the least length)."""
    if "$ref" in schema:
        return default_for(root["$defs"][schema["$ref"].split("/")[-1]], root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            subs = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return default_for(subs[0], root)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type")
    if t == "object":
        return {k: default_for(v, root) for k, v in schema.get("properties", {}).items()}
    if t == "array":
        return [default_for(schema.get("items", {}), root) for _ in range(schema.get("minItems", 0))]
    if t == "string":
        return "x" * max(1, schema.get("minLength", 1))
    return {"integer": 0, "number": 0.0, "boolean": False, "null": None}.get(t, "x")


class ScriptedEngine(Engine):
    """Replies from a script, validated against each call's constraint."""

    name = "scripted"

    def __init__(self, script: Script | None = None) -> None:
        super().__init__()
        self.script = script or (lambda call: None)
        self.calls: list[Call] = []
        self.replies: list[str] = []

    def _generate(self, prompts, constraints, sampling: Sampling) -> list[Completion]:
        out = []
        for messages, c in zip(prompts, constraints):
            call = Call(messages, c, current_step())
            self.calls.append(call)
            reply = self.script(call)
            if isinstance(c, ChoiceConstraint):
                text = str(reply) if reply is not None else c.choices[0]
            else:
                value = default_for(c.json_schema, c.json_schema)
                if isinstance(reply, dict):
                    value.update(reply)
                text = json.dumps(value, separators=(",", ":"))
            check_text(c, text)
            self.replies.append(text)
            out.append(Completion(text=text, prompt_tokens=len(str(messages)) // 4, completion_tokens=len(text) // 4))
        return out

    def steps(self) -> list[str]:
        return [c.step for c in self.calls]

    def count(self, step: str) -> int:
        return sum(c.step == step for c in self.calls)

    def all_text(self) -> str:
        return "\n".join(m["content"] for c in self.calls for m in c.messages)


@contextmanager
def using(engine: Engine, **lm_kwargs: Any):
    """Run dspy calls on ``engine`` through medprog's adapter."""
    with dspy.context(lm=engine.as_lm(**{"temperature": 0.0, "max_tokens": 1024, **lm_kwargs}),
                      adapter=MedprogAdapter()):
        yield engine


# ------------------------------------------------------------------------ tiny local model

TINY_CORPUS = [
    '{"reasoning":"fever and cough","answer":"B","speak":false,"to":[1],"message":"agree"}',
    '{"experts":[{"role":"Cardiologist","description":"heart","hierarchy":"independent"}]}',
    '{"action":"ask","text":"how long?"}', '{"reply":"two days"}', '{"found":true,"result":"normal"}',
    '{"report":{"symptoms":["cough"],"tests":["x-ray"],"diagnoses":["pneumonia"],"basis":"fever"}}',
    '{"terms":["type 2 diabetes","anemia"],"codes":["E11.9","N18.30"],"keep":["D63.1"]}',
    "A 45-year-old woman presents with fever, cough and shortness of breath. Options: A B C D E yes no maybe.",
]


@functools.cache
def tiny_model_dir(quote_bias: float = 0.6) -> str:
    """A tiny random Qwen2 with its own BPE, built once per process.

    Its weights are random except for one residual dimension that carries a constant: the
    output layer reads it as a bonus for tokens containing a double quote, so constrained JSON
    strings close after a few tokens instead of running to their length bound. Decoding stays
    random and real (outlines constraints, batching, accounting); only the test is short.
    """
    import torch

    from medprog.engines.small_model import SmallModelConfig, build_small_model

    cfg = SmallModelConfig(vocab_size=400, hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64)
    path = tempfile.mkdtemp(prefix="medprog-agents-tiny-")
    build_small_model(path, TINY_CORPUS * 4, cfg=cfg, seed=0)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    quotes = [i for t, i in tok.get_vocab().items() if '"' in tok.convert_tokens_to_string([t])]
    with torch.no_grad():
        emb = model.get_input_embeddings().weight  # tied with the output layer
        emb[:, 0] = 1.0
        emb[quotes, 0] = 1.0 + quote_bias
        for layer in model.model.layers:  # nothing writes to dimension 0: it stays constant
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
    model.save_pretrained(path, safe_serialization=True)
    return path


@functools.cache
def tiny_engine() -> Engine:
    """One tiny local engine per test process (no request cache)."""
    from medprog.engines import make_engine

    return make_engine(f"local:{tiny_model_dir()}", cache_dir=False)


# ------------------------------------------------------------------------ real vLLM server

def _scripted_transcripts() -> list[tuple[list[dict[str, str]], str]]:
    """(messages, reply) pairs from scripted runs of every agent program (training data)."""
    from medprog.data.hospital import synth_hospital
    from medprog.data.icd_notes import SYNTH_CODES, synth_icd_notes
    from medprog.data.medqa import synth_medqa
    from medprog.data.synth_registry import synth_registry
    from medprog.programs.registry import get_program

    tmp = tempfile.mkdtemp(prefix="medprog-agents-data-")
    synth_medqa(f"{tmp}/q.jsonl", n=4, seed=0)
    synth_hospital(f"{tmp}/h.json", n=2, seed=0)
    synth_icd_notes(f"{tmp}/c.jsonl", n=3, seed=0)
    synth_registry(f"{tmp}/r", n=30, seed=0)
    engine = ScriptedEngine(lambda call: {"action": "finish"} if call.step == "doctor" else
                            ({"terms": ["diabetes"]} if call.step == "analyse" else None))
    runs = [("mdagents", f"{tmp}/q.jsonl", {"mode": "intermediate", "n_experts": 2, "rounds": 1, "turns": 1}),
            ("mdagents", f"{tmp}/q.jsonl", {"mode": "advanced"}), ("hospital", f"{tmp}/h.json", {}),
            ("clh", f"{tmp}/c.jsonl", {"scope": sorted({c[:3] for c in SYNTH_CODES}), "index_dir": index_dir()}),
            ("creason", f"{tmp}/r", {})]
    with using(engine):
        for name, data, settings in runs:
            info = get_program(name)
            for ex in info.load(data, None)[:3]:
                info.build(**{**info.defaults, **settings})(**ex.inputs())
    per_step: dict[str, int] = {}
    pairs = []
    for c, r in zip(engine.calls, engine.replies):  # a few examples per step keep training short
        per_step[c.step] = per_step.get(c.step, 0) + 1
        if per_step[c.step] <= 3:
            pairs.append((c.messages, r))
    return pairs


@functools.cache
def index_dir() -> str:
    """A per-process cache directory for the clh retrieval index."""
    return tempfile.mkdtemp(prefix="medprog-icd-index-")


_SERVERS: list[Any] = []


@functools.cache
def vllm_url() -> str:
    """Start one vLLM server for this process (stopped at exit); fail clearly without ``.vllm-venv``."""
    import atexit
    import contextlib

    import pytest

    from medprog.engines.vllm_server import VLLMSetupError, build_served_test_model, start_vllm_server, vllm_python

    try:
        vllm_python()
    except VLLMSetupError as e:
        if os.environ.get("MEDPROG_SKIP_VLLM") == "1":
            pytest.skip("MEDPROG_SKIP_VLLM=1: vLLM tests skipped")
        pytest.fail(f"{e} (or set MEDPROG_SKIP_VLLM=1 to skip the vLLM tests)", pytrace=False)
    path = build_served_test_model(f"{tempfile.mkdtemp(prefix='medprog-agents-served-')}/agents-tiny",
                                   _scripted_transcripts(), steps=40)
    stack = contextlib.ExitStack()
    url = stack.enter_context(start_vllm_server(path, max_model_len=2048))
    atexit.register(stack.close)
    _SERVERS.append(stack)
    return url


def vllm_engine() -> Engine:
    """A fresh `openai:` engine (own ledger, no cache) on the shared server."""
    from medprog.engines.server import ServerEngine

    return ServerEngine("agents-tiny", [vllm_url()], cache=None, concurrency=4, timeout=120.0, retries=2,
                        backoff=0.1)
