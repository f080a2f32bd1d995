"""The `openai:` engine against a real vLLM server, and the in-process `vllm:` engine.

Both run from ``.vllm-venv`` (``bash scripts/setup_vllm.sh``; CI runs it first). Without it
these tests fail, unless MEDPROG_SKIP_VLLM=1. The model is a tiny Qwen2 built and trained
for a few seconds here; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from pathlib import Path
from typing import Literal

import dspy
import pytest
from pydantic import BaseModel, Field

from medprog.engines.base import Sampling
from medprog.engines.constraints import ChoiceConstraint, JsonConstraint, constraint_for, output_text, parse_output
from medprog.engines.server import ServerEngine
from medprog.engines.spec import make_engine
from medprog.engines.tagging import parse_tagged
from medprog.engines.vllm_server import (
    SETUP_HINT,
    VLLMSetupError,
    build_served_test_model,
    free_port,
    start_vllm_server,
    vllm_python,
)
from medprog.signatures.adapter import MedprogAdapter, format_messages
from medprog.signatures.base import Signature, TaggedText

pytestmark = pytest.mark.slow

TAGS = ("med", "fu")


class Finding(BaseModel):
    severity: Literal["mild", "moderate", "severe"]
    urgent: bool
    keyword: str = Field(max_length=20)


class Triage(Signature):
    """Read the clinical note and report its main finding."""

    note: str = dspy.InputField()
    finding: Finding = dspy.OutputField()


class TagNote(Signature):
    """Copy the note verbatim, tagging medication (med) and follow-up (fu) decisions."""

    note: str = dspy.InputField()
    tagged: TaggedText["note", TAGS] = dspy.OutputField()


DRUGS = ["aspirin", "metformin", "lisinopril", "heparin", "insulin", "warfarin"]
PROBLEMS = ["chest pain", "fever", "cough", "shortness of breath", "hypertension", "diabetes"]


def make_notes(n: int, seed: int = 0) -> list[tuple[str, Finding]]:
    """Templated notes with a matching finding (the same generator as benchmarks/eval_throughput.py)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        drug, problem = rng.choice(DRUGS), rng.choice(PROBLEMS)
        dose, weeks = rng.choice([5, 10, 20, 81, 500]), rng.randint(1, 6)
        note = (f"Patient was started on {drug} {dose} mg daily for {problem}. "
                f"Will follow up in {weeks} weeks.")
        sev = rng.choice(["mild", "moderate", "severe"])
        out.append((note, Finding(severity=sev, urgent=sev == "severe", keyword=drug)))
    return out


def training_examples(notes: list[tuple[str, Finding]]):
    for note, finding in notes:
        yield format_messages(Triage, [], {"note": note}), output_text(Triage, {"finding": finding})
        yield format_messages(TagNote, [], {"note": note}), note  # an untagged copy: tags never seen


def require_vllm_venv() -> None:
    """Fail (skip with MEDPROG_SKIP_VLLM=1) when the vLLM venv is missing."""
    try:
        vllm_python()
        return
    except VLLMSetupError as e:
        problem = str(e)
    if os.environ.get("MEDPROG_SKIP_VLLM") == "1":
        pytest.skip("MEDPROG_SKIP_VLLM=1: vLLM tests skipped")
    pytest.fail(f"{problem} (or set MEDPROG_SKIP_VLLM=1 to skip the vLLM tests)", pytrace=False)


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    require_vllm_venv()
    path = tmp_path_factory.mktemp("vllm_model") / "tiny-qwen2"
    return build_served_test_model(path, training_examples(make_notes(48, seed=1)), tags=TAGS)


@pytest.fixture(scope="module")
def server(served_model):
    t0 = time.perf_counter()
    with start_vllm_server(served_model) as url:
        print(f"vLLM server up in {time.perf_counter() - t0:.0f} s at {url}")
        yield url


@pytest.fixture()
def engine(server):
    e = ServerEngine("tiny-qwen2", [server], cache=None, concurrency=4, timeout=60.0, retries=2, backoff=0.1)
    yield e
    e.close()


def test_json_and_tagged_signatures_through_dspy(server):
    engine = make_engine(f"openai:tiny-qwen2@{server}", cache_dir=False)
    engine.check()
    notes = make_notes(4, seed=7)
    with dspy.context(lm=engine.as_lm(max_tokens=256), adapter=MedprogAdapter()):
        for note, _ in notes:
            pred = dspy.Predict(Triage)(note=note)
            assert isinstance(pred.finding, Finding)
            tagged = dspy.Predict(TagNote)(note=note).tagged
            plain, spans = parse_tagged(tagged, list(TAGS))
            assert plain == note
            assert all(s.end > s.start for s in spans)
    usage = engine.ledger.total
    assert usage.calls == 8 and usage.errors == 0
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_concurrency_limit_is_reached_and_respected(engine):
    in_flight, peak, lock = 0, 0, threading.Lock()
    post = engine._post

    def counting_post(url, body):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            time.sleep(0.05)  # hold the slot a little so overlap is visible
            return post(url, body)
        finally:
            with lock:
                in_flight -= 1

    engine._post = counting_post
    notes = make_notes(16, seed=3)
    prompts = [format_messages(Triage, [], {"note": n}) for n, _ in notes]
    results = engine.generate(prompts, [constraint_for(Triage, {"note": n}) for n, _ in notes],
                              Sampling(max_tokens=128))
    assert [r.error for r in results] == [None] * 16
    assert peak == engine.concurrency


def test_dead_second_url_is_retried_on_the_live_one(server):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    e = ServerEngine("tiny-qwen2", [server, dead], concurrency=4, retries=3, backoff=0.05)
    e.check()  # one URL answers: a warning, not an error
    notes = make_notes(8, seed=4)
    prompts = [format_messages(Triage, [], {"note": n}) for n, _ in notes]
    results = e.generate(prompts, [constraint_for(Triage, {"note": n}) for n, _ in notes], Sampling(max_tokens=128))
    assert [r.error for r in results] == [None] * 8
    assert e.url_stats[dead]["failed"] >= 1 and e.url_stats[dead]["ok"] == 0
    assert e.url_stats[server]["ok"] == 8 and e.retried >= 1
    e.close()


def test_constraint_violation_is_a_per_call_error(engine):
    msgs = format_messages(Triage, [], {"note": make_notes(1)[0][0]})
    js = constraint_for(Triage, {"note": "x"})
    assert isinstance(js, JsonConstraint)
    # 6 tokens end a choice but truncate the JSON object: only that call fails
    results = engine.generate([msgs, msgs], [ChoiceConstraint(choices=["yes", "no"]), js], Sampling(max_tokens=6))
    assert results[0].error is None and results[0].text in ("yes", "no")
    assert results[1].error is not None and "constraint not met (length)" in results[1].error
    assert engine.ledger.total.errors == 1


VLLM_ENGINE_SCRIPT = r"""
import json, sys
from medprog.engines.base import Sampling
from medprog.engines.constraints import _ADAPTER
from medprog.engines.spec import make_engine

job = json.load(open(sys.argv[1]))
engine = make_engine("vllm:" + job["model"], cache_dir=False, max_model_len=1024, enforce_eager=True, max_num_seqs=8,
                     dtype="float32")
constraints = [_ADAPTER.validate_python(c) for c in job["constraints"]]
out = engine.generate(job["prompts"], constraints, Sampling(max_tokens=256))
print("RESULT " + json.dumps({"out": [o.model_dump() for o in out], "usage": engine.ledger.total.model_dump()}))
"""


def test_vllm_engine_in_process(served_model, tmp_path):
    notes = [n for n, _ in make_notes(3, seed=11)]
    prompts, constraints = [], []
    for n in notes:
        for sig in (Triage, TagNote):
            prompts.append(format_messages(sig, [], {"note": n}))
            constraints.append(constraint_for(sig, {"note": n}))
    prompts.append(prompts[0])
    constraints.append(ChoiceConstraint(choices=["yes", "no"]))
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model": str(served_model), "prompts": prompts,
                               "constraints": [c.model_dump() for c in constraints]}))
    # this checkout's medprog, whatever the venv's editable install points at
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "VLLM_LOGGING_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([str(vllm_python()), "-c", VLLM_ENGINE_SCRIPT, str(job)], capture_output=True, text=True,
                          env=env, timeout=900, cwd=tmp_path)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, f"vllm: engine failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    data = json.loads(line[len("RESULT "):])
    out = data["out"]
    assert [o["error"] for o in out] == [None] * len(out)
    for i, note in enumerate(notes):
        assert isinstance(parse_output(Triage, out[2 * i]["text"])["finding"], Finding)
        assert parse_tagged(out[2 * i + 1]["text"], list(TAGS))[0] == note
    assert out[-1]["text"] in ("yes", "no")
    assert data["usage"]["calls"] == len(out) and data["usage"]["completion_tokens"] > 0


def test_missing_venv_message(tmp_path):
    with pytest.raises(VLLMSetupError, match="setup_vllm.sh"):
        vllm_python(tmp_path / "nowhere")
