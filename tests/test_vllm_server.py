"""The `openai:` engine against a real vLLM server serving SmolLM2, and the in-process `vllm:` engine.

Both run from ``.vllm-venv`` (``bash scripts/setup_vllm.sh``; CI runs it first); without it
these tests fail, unless MEDPROG_SKIP_VLLM=1. The model is the embedded SmolLM2-135M-Instruct
(``medprog models prepare smollm2``; the ``smollm2_dir`` fixture). Its tokenizer splits every
tag into several tokens (``<``, ``drug``, ``_``, ``decision``, ``>``), so the tagging regex the
server gets is exercised on a real 49k vocabulary. A few calls each: CI time is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Literal

import dspy
import pytest
from pydantic import BaseModel, Field

from medprog.engines.base import Sampling
from medprog.engines.constraints import ChoiceConstraint, JsonConstraint, constraint_for, parse_output
from medprog.engines.server import ServerEngine
from medprog.engines.spec import make_engine
from medprog.engines.tagging import parse_tagged
from medprog.engines.vllm_server import VLLMSetupError, free_port, served_model_dir, start_vllm_server, vllm_python
from medprog.signatures.adapter import MedprogAdapter, format_messages
from medprog.signatures.base import Signature, TaggedText

TAGS = ("drug_decision", "follow_up")
MODEL = "smollm2"


class Finding(BaseModel):
    severity: Literal["mild", "moderate", "severe"]
    urgent: bool
    keyword: str = Field(max_length=20)


class Triage(Signature):
    """Read the clinical note and report its main finding."""

    note: str = dspy.InputField()
    finding: Finding = dspy.OutputField()


class TagNote(Signature):
    """Copy the note verbatim. Wrap each medication decision in <drug_decision>...</drug_decision>
    and each follow-up plan in <follow_up>...</follow_up>."""

    note: str = dspy.InputField()
    tagged: TaggedText["note", TAGS] = dspy.OutputField()  # noqa: UP037 (a field name, not a type)


class Urgency(Signature):
    """Does the patient described in the note need to be seen today?"""

    note: str = dspy.InputField()
    answer: Literal["yes", "no"] = dspy.OutputField()


NOTES = [
    "Patient was started on aspirin 81 mg daily for chest pain. Will follow up in 2 weeks.",
    "Metformin was stopped because of diarrhea. Return to clinic in 3 months.",
    "Lisinopril was held for low blood pressure. Recheck potassium on Monday.",
    "Warfarin dose reduced to 2 mg after a high INR. See the anticoagulation clinic in 5 days.",
]
TAG_DEMO = dspy.Example(
    note="Insulin 10 units was increased to 14 units. Follow up with endocrinology next week.",
    tagged="<drug_decision>Insulin 10 units was increased to 14 units.</drug_decision> "
           "<follow_up>Follow up with endocrinology next week.</follow_up>",
)


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
def server(smollm2_dir):
    require_vllm_venv()
    t0 = time.perf_counter()
    with start_vllm_server(smollm2_dir, served_model_name=MODEL, max_model_len=2048) as url:
        print(f"vLLM server (SmolLM2) up in {time.perf_counter() - t0:.0f} s at {url}")
        yield url


@pytest.fixture()
def engine(server):
    e = ServerEngine(MODEL, [server], cache=None, concurrency=4, retries=2, backoff=0.1)
    yield e
    e.close()


def prompts_and_constraints(signature, notes):
    return ([format_messages(signature, [], {"note": n}) for n in notes],
            [constraint_for(signature, {"note": n}) for n in notes])


VLLM_ENGINE_SCRIPT = r"""
import json, sys
from medprog.engines.base import Sampling
from medprog.engines.constraints import _ADAPTER
from medprog.engines.spec import make_engine

job = json.load(open(sys.argv[1]))
engine = make_engine("vllm:" + job["model"], cache_dir=False, max_model_len=2048, enforce_eager=True, max_num_seqs=8,
                     dtype="float32")
constraints = [_ADAPTER.validate_python(c) for c in job["constraints"]]
out = engine.generate(job["prompts"], constraints, Sampling(max_tokens=256))
print("RESULT " + json.dumps({"out": [o.model_dump() for o in out], "usage": engine.ledger.total.model_dump()}))
"""


@pytest.mark.slow
def test_vllm_engine_in_process(smollm2_dir, tmp_path):
    """`vllm:smollm2` (first in this file, so no server is up beside it): JSON, tagged and choice."""
    require_vllm_venv()
    notes = NOTES[:2]
    prompts, constraints = [], []
    for sig in (Triage, TagNote):
        p, c = prompts_and_constraints(sig, notes)
        prompts += p
        constraints += c
    prompts.append(prompts[0])
    constraints.append(ChoiceConstraint(choices=["yes", "no"]))
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model": MODEL, "prompts": prompts,  # the embedded name resolves
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
        assert isinstance(parse_output(Triage, out[i]["text"])["finding"], Finding)
        assert parse_tagged(out[len(notes) + i]["text"], list(TAGS))[0] == note
    assert out[-1]["text"] in ("yes", "no")
    assert data["usage"]["calls"] == len(out) and data["usage"]["completion_tokens"] > 0


@pytest.mark.slow
def test_json_choice_and_tagged_signatures_through_dspy(server, smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert all(len(tok(f"<{t}>", add_special_tokens=False)["input_ids"]) > 2 for t in TAGS)  # tags are multi-token

    engine = make_engine(f"openai:{MODEL}@{server}", cache_dir=False)
    engine.check()
    tag_note = dspy.Predict(TagNote)
    tag_note.demos = [TAG_DEMO]
    spans = []
    with dspy.context(lm=engine.as_lm(max_tokens=256), adapter=MedprogAdapter()):
        for note in NOTES[:2]:
            assert isinstance(dspy.Predict(Triage)(note=note).finding, Finding)
            assert dspy.Predict(Urgency)(note=note).answer in ("yes", "no")
            tagged = tag_note(note=note).tagged
            plain, found = parse_tagged(tagged, list(TAGS))
            assert plain == note  # the copy is exact once the tags are stripped
            assert all(s.end > s.start for s in found)
            spans += found
    assert spans, "with a tagged demo SmolLM2 tags something: multi-token tags pass the server's regex"
    usage = engine.ledger.total
    assert usage.calls == 6 and usage.errors == 0
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0


@pytest.mark.slow
def test_concurrency_limit_is_reached_and_respected(engine):
    in_flight, peak, lock = 0, 0, threading.Lock()
    post = engine._post

    def counting_post(*args, **kwargs):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            time.sleep(0.05)  # hold the slot a little so overlap is visible
            return post(*args, **kwargs)
        finally:
            with lock:
                in_flight -= 1

    engine._post = counting_post
    prompts, constraints = prompts_and_constraints(Urgency, NOTES * 2)
    results = engine.generate(prompts, constraints, Sampling(max_tokens=16))
    assert [r.error for r in results] == [None] * 8
    assert peak == engine.concurrency


@pytest.mark.slow
def test_dead_second_url_is_retried_on_the_live_one(server):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    e = ServerEngine(MODEL, [server, dead], concurrency=4, retries=3, backoff=0.05)
    e.check()  # one URL answers: a warning, not an error
    prompts, constraints = prompts_and_constraints(Urgency, NOTES)
    results = e.generate(prompts, constraints, Sampling(max_tokens=16))
    assert [r.error for r in results] == [None] * 4
    assert e.url_stats[dead]["failed"] >= 1 and e.url_stats[dead]["ok"] == 0
    assert e.url_stats[server]["ok"] == 4 and e.retried >= 1
    e.close()


@pytest.mark.slow
def test_constraint_violation_is_a_per_call_error(engine):
    msgs = format_messages(Triage, [], {"note": NOTES[0]})
    js = constraint_for(Triage, {"note": NOTES[0]})
    assert isinstance(js, JsonConstraint)
    # 6 tokens end a choice but truncate the JSON object: only that call fails
    results = engine.generate([msgs, msgs], [ChoiceConstraint(choices=["yes", "no"]), js], Sampling(max_tokens=6))
    assert results[0].error is None and results[0].text in ("yes", "no")
    assert results[1].error is not None and "constraint not met (length)" in results[1].error
    assert engine.ledger.total.errors == 1


def test_missing_venv_message(tmp_path):
    with pytest.raises(VLLMSetupError, match="setup_vllm.sh"):
        vllm_python(tmp_path / "nowhere")


def test_served_model_must_be_a_model_directory(tmp_path):
    with pytest.raises(VLLMSetupError, match="no config.json"):
        served_model_dir(tmp_path)
