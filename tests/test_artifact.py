"""Compiled artifacts: save/load round trip, integrity checks, medprog.load.

Also home of the small test program (`TOY`, a Literal-output triage task), its data
writer, a rule-based fake engine and the tiny local model fixture that the other
product tests import.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any, Literal

import dspy
import pytest
from pydantic import BaseModel

from medprog.artifact import (
    ArtifactError,
    apply_state,
    load_artifact,
    module_state,
    save_artifact,
    verify_artifact,
)
from medprog.engines.base import Completion, Engine, Sampling
from medprog.engines.constraints import ChoiceConstraint, JsonConstraint, TaggedConstraint
from medprog.programs.registry import ProgramInfo
from medprog.signatures import Signature

# ---------------------------------------------------------------------------------------
# the toy program


class Triage(Signature):
    """Classify how urgent the clinical note is."""

    note: str = dspy.InputField()
    urgency: Literal["low", "high"] = dspy.OutputField()


class TriageProgram(dspy.Module):
    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self.prefix = prefix
        self.classify = dspy.Predict(Triage)

    def forward(self, note: str) -> dspy.Prediction:
        return self.classify(note=self.prefix + note)


LOW = ["mild cough for two days", "routine follow up, no complaints", "a small rash on the arm",
       "asks for a repeat prescription"]
HIGH = ["crushing chest pain radiating to the left arm", "sudden weakness of the right side", "vomiting blood",
        "unresponsive and not breathing"]


def write_toy_data(path: Path, n: int, seed: int = 0, fail_every: int = 0) -> Path:
    """``n`` notes alternating low/high, with a sex subgroup; every ``fail_every``-th note asks the fake engine to fail."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "high" if i % 2 else "low"
        note = f"{rng.randint(20, 90)}-year-old with {rng.choice(HIGH if label == 'high' else LOW)}."
        if fail_every and i % fail_every == fail_every - 1:
            note += " FAIL"
        rows.append({"id": f"n{i:03d}", "note": note, "urgency": label, "group": rng.choice(["F", "M"])})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def toy_load(path: str | Path, split: str | None = None) -> list[dspy.Example]:
    """A JSONL file, or ``DIR/<split>.jsonl`` for a directory."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{split or 'all'}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [dspy.Example(**r).with_inputs("note") for r in rows]


def toy_record(example: dspy.Example, prediction: Any) -> dict[str, Any]:
    return {"id": example.id, "urgency": prediction.urgency}


def toy_metrics(examples: list[dspy.Example], records: list[dict[str, Any]]) -> dict[str, Any]:
    by_id = {r["id"]: r for r in records}

    def acc(exs: list[dspy.Example]) -> float:
        return sum(by_id.get(e.id, {}).get("urgency") == e.urgency for e in exs) / len(exs) if exs else 0.0

    return {
        "accuracy": acc(examples),
        "per_option": {o: {"accuracy": acc([e for e in examples if e.urgency == o]),
                           "n": sum(e.urgency == o for e in examples)} for o in ("low", "high")},
        "groups": {g: {"accuracy": acc([e for e in examples if e.group == g])} for g in ("F", "M")},
    }


def toy_score(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    return float(prediction.urgency == example.urgency)


TOY = ProgramInfo(name="toy-triage", task="toy urgency triage", metric="accuracy", build=TriageProgram,
                  load=toy_load, to_record=toy_record, metrics=toy_metrics, score=toy_score)


# ---------------------------------------------------------------------------------------
# a rule-based engine (fast, deterministic) and the tiny local model


def _fill(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    if "$ref" in schema:
        return _fill(root["$defs"][schema["$ref"].split("/")[-1]], root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _fill(schema[key][0], root)
    if "enum" in schema:
        return schema["enum"][0]
    t = schema.get("type")
    if t == "object":
        return {k: _fill(v, root) for k, v in schema.get("properties", {}).items()}
    return {"string": "Decide from the note.", "integer": 0, "number": 0.0, "boolean": False, "array": []}.get(t)


class FakeEngine(Engine):
    """Answers ``high`` when the note mentions a high-urgency phrase, else ``low``; fails on ``FAIL``.

    ``wrong`` flips every answer (a worse program for compare tests); ``delay`` slows each call.
    """

    name = "fake"
    thread_safe = True

    def __init__(self, *, delay: float = 0.0, wrong: bool = False) -> None:
        super().__init__()
        self.delay, self.wrong = delay, wrong
        self.in_flight = 0
        self.max_in_flight = 0
        self._count_lock = threading.Lock()
        self.seen: list[str] = []

    def _generate(self, prompts, constraints, sampling: Sampling) -> list[Completion]:
        with self._count_lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            out = []
            for p, c in zip(prompts, constraints):
                last = p[-1]["content"]
                self.seen.append(last)
                n_tok = sum(len(m["content"].split()) for m in p)
                if "FAIL" in last:
                    out.append(Completion(error="simulated server error after retries", prompt_tokens=n_tok))
                    continue
                if isinstance(c, ChoiceConstraint):
                    high = any(h in last for h in HIGH)
                    text = ("low" if high else "high") if self.wrong else ("high" if high else "low")
                elif isinstance(c, JsonConstraint):
                    text = json.dumps(_fill(c.json_schema, c.json_schema), separators=(",", ":"))
                elif isinstance(c, TaggedConstraint):
                    text = c.text
                else:
                    text = "Decide from the note."
                out.append(Completion(text=text, prompt_tokens=n_tok, completion_tokens=1))
            return out
        finally:
            with self._count_lock:
                self.in_flight -= 1


def build_tiny_model(base: Path) -> Path:
    """A random 2-layer model with a tokenizer trained on the toy phrases (built once per session)."""
    from medprog.engines.small_model import TEST_CORPUS, SmallModelConfig, build_small_model

    path = base / "tiny-model"
    if not (path / "config.json").is_file():
        corpus = TEST_CORPUS + LOW + HIGH + ["urgency low high note Classify how urgent the clinical note is."] * 3
        build_small_model(path, corpus, cfg=SmallModelConfig(vocab_size=512, hidden_size=64, num_layers=2,
                                                             num_heads=2, intermediate_size=128))
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.getbasetemp())


# ---------------------------------------------------------------------------------------
# tests


class Finding(BaseModel):
    label: str
    severity: int


class Describe(Signature):
    """Describe the main finding."""

    note: str = dspy.InputField()
    finding: Finding = dspy.OutputField()


class TwoStep(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.classify = dspy.Predict(Triage)
        self.describe = dspy.Predict(Describe)

    def forward(self, note: str) -> dspy.Prediction:
        return self.describe(note=note)


TWO = ProgramInfo(name="toy-two-step", task="t", metric="m", build=TwoStep, load=toy_load, to_record=toy_record,
                  metrics=toy_metrics, score=toy_score)


def _compiled_two_step() -> TwoStep:
    m = TwoStep()
    apply_state(m, {
        "classify": {"instructions": "Triage it.", "demos": [{"note": "chest pain", "urgency": "high", "augmented": True}]},
        "describe": {"instructions": "Say what it is.",
                     "demos": [{"note": "cough", "finding": {"label": "cough", "severity": 1}}],
                     "config": {"temperature": 0.0}},
    })
    return m


def test_round_trip_restores_instructions_demos_types_and_step_names(tmp_path: Path) -> None:
    m = _compiled_two_step()
    assert m.classify.signature.__name__ == "Triage"  # instructions changed, name kept (per-step accounting)
    out = save_artifact(tmp_path / "art", TWO, m, settings={}, report={"dev": {"metrics": {"accuracy": 1.0}}})
    art = load_artifact(out)
    assert module_state(art.module) == module_state(m)
    demo = art.module.describe.demos[0]
    assert isinstance(demo["finding"], Finding) and demo["finding"].severity == 1
    assert art.module.describe.signature.__name__ == "Describe"
    assert art.module.describe.config == {"temperature": 0.0}
    assert art.report["dev"]["metrics"]["accuracy"] == 1.0
    body = json.loads((out / "program.json").read_text())
    assert body["program"] == {"name": "toy-two-step", "ref": "test_artifact:TWO", "version": "1"}
    assert {"medprog", "dspy", "pydantic"} <= set(body["versions"])
    assert body["hash"].startswith("sha256:")
    assert (out.stat().st_mode & 0o777) == 0o700
    assert ((out / "program.json").stat().st_mode & 0o777) == 0o600


def test_demos_render_identically_after_loading(tmp_path: Path) -> None:
    from medprog.signatures.adapter import format_messages

    m = _compiled_two_step()
    art = load_artifact(save_artifact(tmp_path / "a", TWO, m))
    for name in ("classify", "describe"):
        a, b = getattr(m, name), getattr(art.module, name)
        assert format_messages(a.signature, a.demos, {"note": "x"}) == format_messages(b.signature, b.demos, {"note": "x"})


def test_build_settings_are_stored_and_used(tmp_path: Path) -> None:
    art = load_artifact(save_artifact(tmp_path / "a", TOY, TriageProgram(prefix="Note: "), settings={"prefix": "Note: "}))
    assert art.module.prefix == "Note: " and art.settings == {"prefix": "Note: "}


def test_weights_are_hashed_and_default_lm_is_relative(tmp_path: Path) -> None:
    w = tmp_path / "w"
    w.mkdir()
    (w / "model.safetensors").write_bytes(b"\x00" * 64)
    (w / "tokenizer.json").write_text("{}")
    out = save_artifact(tmp_path / "art", TOY, TriageProgram(), weights=w)
    body = json.loads((out / "program.json").read_text())
    assert body["default_lm"] == "local:weights"
    assert set(body["files"]) == {"weights/model.safetensors", "weights/tokenizer.json"}
    art = load_artifact(out)
    assert art.default_lm == f"local:{(out / 'weights').resolve()}"
    # moving the artifact keeps its model
    moved = tmp_path / "moved"
    out.rename(moved)
    assert load_artifact(moved).default_lm == f"local:{(moved / 'weights').resolve()}"


def test_tampered_program_json_is_refused(tmp_path: Path) -> None:
    out = save_artifact(tmp_path / "a", TOY, TriageProgram())
    body = json.loads((out / "program.json").read_text())
    body["steps"]["classify"]["instructions"] = "Always answer high."
    (out / "program.json").write_text(json.dumps(body))
    with pytest.raises(ArtifactError, match=r"program\.json: content hash mismatch"):
        load_artifact(out)


def test_tampered_missing_or_extra_weights_are_refused(tmp_path: Path) -> None:
    w = tmp_path / "w"
    w.mkdir()
    (w / "model.safetensors").write_bytes(b"\x01" * 32)
    out = save_artifact(tmp_path / "a", TOY, TriageProgram(), weights=w)
    (out / "weights" / "model.safetensors").write_bytes(b"\x02" * 32)
    with pytest.raises(ArtifactError, match=r"model\.safetensors: content hash mismatch"):
        verify_artifact(out)
    (out / "weights" / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match=r"model\.safetensors: missing"):
        verify_artifact(out)
    (out / "weights" / "model.safetensors").write_bytes(b"\x01" * 32)
    verify_artifact(out)
    (out / "weights" / "adapter.safetensors").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"adapter\.safetensors: not listed"):
        verify_artifact(out)


def test_truncated_files_are_refused(tmp_path: Path) -> None:
    out = save_artifact(tmp_path / "a", TOY, TriageProgram(), report={"dev": {}})
    text = (out / "program.json").read_text()
    (out / "program.json").write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError, match=r"program\.json: not valid JSON .*truncated"):
        load_artifact(out)
    (out / "program.json").write_text(text)
    (out / "report.json").write_text('{"dev": ')
    with pytest.raises(ArtifactError, match=r"report\.json: not valid JSON"):
        load_artifact(out)
    (out / "program.json").unlink()
    with pytest.raises(ArtifactError, match=r"program\.json: missing"):
        load_artifact(out)


def _rewrite(out: Path, **changes: Any) -> None:
    from medprog.artifact import body_hash

    body = json.loads((out / "program.json").read_text())
    for k, v in changes.items():
        body[k] = v
    body["hash"] = body_hash(body)
    (out / "program.json").write_text(json.dumps(body))


def test_incompatible_versions_are_refused(tmp_path: Path) -> None:
    out = save_artifact(tmp_path / "a", TOY, TriageProgram())
    _rewrite(out, format_version=99)
    with pytest.raises(ArtifactError, match="format version 99 is not supported"):
        load_artifact(out)
    _rewrite(out, format_version=1, program={"name": "toy-triage", "ref": "test_artifact:TOY", "version": "7"})
    with pytest.raises(ArtifactError, match="compiled for toy-triage version 7"):
        load_artifact(out)
    _rewrite(out, program={"name": "toy-triage", "ref": "test_artifact:TOY", "version": "1"},
             versions={"medprog": "99.0.0"})
    with pytest.raises(ArtifactError, match="written by medprog 99.0.0"):
        load_artifact(out)
    _rewrite(out, versions={"medprog": "0.1.0"}, steps={"nope": {"instructions": "x"}})
    with pytest.raises(ArtifactError, match=r"step\(s\) \['nope'\] are not in the program"):
        load_artifact(out)


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    out = save_artifact(tmp_path / "a", TWO, _compiled_two_step())

    def forbidden(*a: Any, **k: Any) -> Any:
        raise AssertionError("unpickling during load")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    load_artifact(out)


def test_medprog_load_runs_the_program(tmp_path: Path) -> None:
    import medprog

    m = TriageProgram()
    m.classify.demos = [dspy.Example(note="vomiting blood", urgency="high")]
    art = medprog.load(save_artifact(tmp_path / "a", TOY, m))
    engine = FakeEngine()
    with dspy.context(lm=engine.as_lm()):
        assert art(note="crushing chest pain radiating to the left arm").urgency == "high"
    assert art.module.classify.demos[0]["urgency"] == "high"


def test_import_medprog_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, medprog; assert callable(medprog.load); print('torch' in sys.modules, 'dspy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent)
    assert out.stdout.split() == ["False", "False"]
