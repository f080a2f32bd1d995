"""creason's letter-only setting and GRPO under the choice constraint: answerable tasks, training
prompt = inference prompt, constrained choice rollouts on a tiny local model."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from types import SimpleNamespace

import dspy
import pytest
from programs_fixtures import ScriptedEngine, tiny_model_dir, using

from medprog.data.patient_registry import build_tasks, load_registry, write_tasks
from medprog.data.synth_registry import synth_registry
from medprog.engines.local import end_of_turn_id, render_prompt
from medprog.optimizers.choice_rollouts import choice_rollouts, example_choices
from medprog.optimizers.training_data import prompt_messages
from medprog.programs.creason import PROGRAM


def _examples(tmp_path, n=40, seed=1) -> list[dspy.Example]:
    synth_registry(tmp_path / "reg", n=n, seed=seed)
    tasks = build_tasks(load_registry(tmp_path / "reg"), seed=seed)
    two = [t for t in tasks if len(t.options) == 2][:2]
    five = [t for t in tasks if len(t.options) == 5][:2]
    return PROGRAM.load(write_tasks(two + five, tmp_path / "tasks.jsonl"), None)


def test_tasks_have_a_choice_and_one_gold_answer_per_prompt(tmp_path):
    # three patients: the MI filter hides nearly everything, so visible data coincide
    synth_registry(tmp_path / "r3", n=3, seed=0)
    tasks = build_tasks(load_registry(tmp_path / "r3"))
    assert tasks and all(len(set(t.options.values())) >= 2 for t in tasks)
    keys = [(t.record, t.question, frozenset(t.options.values())) for t in tasks]
    assert len(set(keys)) == len(keys)
    # hand-made registries asked their outcome: patients 1 and 2 look the same, one lived, one died
    for name, died, kept in (("r", ["yes", "no", "no"], ["1:died", "3:died"]), ("s", ["no"] * 3, [])):
        path = tmp_path / f"{name}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "group", "died"])
            w.writerows([[i + 1, g, d] for i, (g, d) in enumerate(zip("aab", died))])
        path.with_suffix(".schema.json").write_text(json.dumps({"id": "id", "outcome": "died"}))
        tasks = build_tasks(load_registry(path), seed=0, outcome_share=1.0)
        assert [t.id for t in tasks] == kept  # a one-option outcome ("no" for all) is never asked
        assert all(set(t.options.values()) == {"yes", "no"} for t in tasks)


def test_cot_setting_reaches_the_program(tmp_path):
    examples = _examples(tmp_path)
    engine = ScriptedEngine(lambda call: {"answer": call.allowed("answer")[-1], "reasoning": "r"}
                            if call.title != "choice" else call.choices[-1])
    with using(engine):
        direct = [PROGRAM.build(**{**PROGRAM.defaults, "cot": False})(**ex.inputs()) for ex in examples]
        cot = [PROGRAM.build(**PROGRAM.defaults)(**ex.inputs()) for ex in examples]
    assert PROGRAM.defaults == {"cot": True}
    calls = engine.calls
    assert [c.title for c in calls] == ["choice"] * 4 + ["ClinicalReasoning"] * 4
    assert [c.choices for c in calls[:4]] == [list(ex.options) for ex in examples]
    assert [p.answer for p in direct] == [list(ex.options)[-1] for ex in examples]
    assert all(p.reasoning is None for p in direct) and all(p.reasoning == "r" for p in cot)
    assert engine.steps() == ["answer"] * 4 + ["reason"] * 4
    with pytest.raises(ValueError, match="cot must be true or false"):
        PROGRAM.build(cot="no")


@pytest.mark.parametrize("cot", [False, True])
def test_training_prompt_is_the_inference_prompt(tmp_path, cot):
    examples = _examples(tmp_path)
    program = PROGRAM.build(cot=cot)
    engine = ScriptedEngine()
    with using(engine):
        for ex in examples:
            program(**ex.inputs())
    signature = program.reason.signature
    assert [c.messages for c in engine.calls] == [prompt_messages(signature, ex) for ex in examples]
    letters = "Answer with exactly one of: A, B." if not cot else '"enum":["A","B"]'
    assert letters in prompt_messages(signature, examples[0])[0]["content"]


def test_choice_rollouts_sample_an_allowed_letter_then_the_end(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    tok.padding_side = "left"
    examples = _examples(tmp_path)
    signature = PROGRAM.build(cot=False).reason.signature
    rollout = choice_rollouts(signature, examples, tok, 1.0, model.config.vocab_size)
    engine = ScriptedEngine()
    with using(engine):  # what the program sends at inference
        for ex in examples:
            PROGRAM.build(cot=False)(**ex.inputs())
    prompts = [prompt_messages(signature, ex) for ex in examples] * 4
    out = rollout(prompts, SimpleNamespace(model=model))
    eot = end_of_turn_id(tok)
    assert out["prompt_ids"] == [render_prompt(tok, c.messages) for c in engine.calls] * 4
    seen = set()
    for ex, ids, mask in zip(examples * 4, out["completion_ids"], out["env_mask"]):
        letter = tok.decode(ids[:-1])
        assert ids[-1] == eot and letter in ex.options and example_choices(signature, ex) == tuple(ex.options)
        assert mask == [1] * (len(ids) - 1) + [0]
        seen.add((len(ex.options), letter))
    assert len({letter for _, letter in seen}) >= 2  # sampled, not argmax


@pytest.mark.slow
def test_grpo_compiles_letter_only_creason(tmp_path):
    _examples(tmp_path, n=60, seed=2)
    data = tmp_path / "tasks.jsonl"
    out = tmp_path / "art"
    r = subprocess.run([sys.executable, "-m", "medprog.cli", "compile", "creason", "--optimizer", "grpo",
                        "--base", tiny_model_dir(), "--train", str(data), "--out", str(out),
                        "-o", "settings={\"cot\": false}", "-o", "steps=2", "-o", "num_generations=2",
                        "-o", "batch_size=4", "-o", "threads=1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["constrained"] is True and len(report["reward_history"]) == 2
    assert all(0.0 <= h["reward"] <= 1.0 for h in report["reward_history"])
    assert json.loads((out / "program.json").read_text())["settings"] == {"cot": False}
