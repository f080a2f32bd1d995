"""`mcq` (one-call multiple choice) and the MCQ loader: what public sets carry, prompt hygiene, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from programs_fixtures import ScriptedEngine, using
from typer.testing import CliRunner

from medprog.cli import app
from medprog.data.medqa import MedQAFormatError, load_medqa
from medprog.engines.constraints import ChoiceConstraint, JsonConstraint
from medprog.programs.mcq import PROGRAM, MultipleChoice
from medprog.programs.registry import get_program

runner = CliRunner()
SECRETS = {"rationale": "SECRET-RATIONALE", "explanation": "SECRET-EXPLANATION", "cot": "SECRET-COT",
           "predictions": {"gpt-4": "SECRET-PRED-GPT", "other": {"answer": "SECRET-PRED-NESTED"}},
           "model_answer": "SECRET-MODEL-ANSWER", "metamap_phrases": ["SECRET-PHRASE"], "meta_info": "SECRET-META"}


def rows_file(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def question(n: int, **extra: Any) -> dict[str, Any]:
    letters = "ABCDEFGHIJ"[:n]
    return {"question": f"A question with {n} options. Which is right?",
            "options": {k: f"option text {k}" for k in letters}, "answer_idx": letters[-1], **extra}


def err(result: Any) -> str:
    return " ".join(result.stderr.split())


# loader -----------------------------------------------------------------------------------
def test_loader_takes_3_to_10_options_any_id_and_drops_extra_fields(tmp_path):
    rows = [question(3, id=7), question(5, id="q-5"), question(10), question(4, realidx=12, **SECRETS),
            {"question": "List options?", "choices": ["x", "y", "z", "w"], "label": 2, "qid": "L"},
            {"question": "Answer by text?", "options": {"A": "yes", "B": "no", "C": "maybe"}, "answer": "no"}]
    items = load_medqa(rows_file(tmp_path / "q.jsonl", rows))
    assert [len(i.options) for i in items] == [3, 5, 10, 4, 4, 3]
    assert [i.id for i in items] == ["7", "q-5", "2", "12", "L", "5"]  # absent id: the row number
    assert [i.answer for i in items] == ["C", "E", "J", "D", "C", "B"]  # int label: 0-based index
    assert set(items[3].model_dump()) == {"id", "question", "options", "answer"}
    examples = PROGRAM.load(tmp_path / "q.jsonl", None)
    assert set(examples[3].inputs().keys()) == {"question", "options"}
    assert "SECRET" not in json.dumps([dict(e) for e in examples])


@pytest.mark.parametrize("row, expected", [
    ("{not json", "q.jsonl:2: not valid JSON"),
    (["a", "list"], "q.jsonl:2: expected a JSON object"),
    ({"options": {"A": "x", "B": "y"}}, "q.jsonl:2: expected a non-empty string 'question'"),
    ({"question": "q"}, "q.jsonl:2: expected 'options'"),
    ({"question": "q", "options": {"A": "only"}}, "q.jsonl:2: expected 2 to 26 options, got 1"),
    ({"question": "q", "options": "A) x B) y"}, "q.jsonl:2: expected 'options' as an object"),
    ({"question": "q", "options": {"A": "x", "B": ""}}, "q.jsonl:2: expected a non-empty text for every option"),
    ({"question": "q", "options": {"A": "x", "B": "y"}, "answer_idx": "E"}, "q.jsonl:2: expected the gold letter"),
    ({"question": "q", "options": {"A": "x", "B": "y"}, "id": [1]}, "q.jsonl:2: expected the question id"),
])
def test_malformed_rows_name_file_line_and_expectation(tmp_path, row, expected):
    path = rows_file(tmp_path / "q.jsonl", [question(4), row])
    with pytest.raises(MedQAFormatError, match=expected.replace("(", r"\(")):
        load_medqa(path)


def test_malformed_jsonl_is_one_line_exit_2_from_the_cli(tmp_path):
    bad = rows_file(tmp_path / "bad.jsonl", [question(4), {"question": "q", "options": {"A": "x"}}])
    for program in ("mdagents", "mcq"):
        r = runner.invoke(app, ["eval", program, "--data", str(bad), "--lm", "local:/nowhere", "--out",
                                str(tmp_path / "run")], catch_exceptions=False)
        assert r.exit_code == 2, r.output
        assert f"{bad}:2: expected 2 to 26 options, got 1" in err(r) and "Traceback" not in r.output
        assert len(r.stderr.strip().splitlines()) <= 2  # the error line (and at most the destination log)


# program ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 4, 10])
def test_direct_answer_is_one_choice_call_over_the_questions_own_letters(n):
    q = question(n)
    engine = ScriptedEngine(lambda call: call.choices[-1])
    with using(engine):
        pred = MultipleChoice()(question=q["question"], options=q["options"])
    (call,) = engine.calls
    assert isinstance(call.constraint, ChoiceConstraint) and call.choices == list(q["options"])
    assert pred.answer == list(q["options"])[-1] and pred.reasoning is None and pred.usage["calls"] == 1


def test_cot_reasons_before_the_letter_in_one_json_call():
    q = question(5)
    engine = ScriptedEngine(lambda call: {"reasoning": "The findings point to E, the last option listed.", "answer": "E"})
    with using(engine):
        pred = MultipleChoice(cot=True)(question=q["question"], options=q["options"])
    (call,) = engine.calls
    assert isinstance(call.constraint, JsonConstraint)
    props = call.constraint.json_schema["properties"]
    assert list(props) == ["reasoning", "answer"] and call.allowed("answer") == list("ABCDE")
    assert pred.answer == "E" and pred.reasoning.startswith("The findings") and pred.mode == "cot"


@pytest.mark.parametrize("cot", [False, True])
def test_only_question_and_options_reach_the_prompt(tmp_path, cot):
    path = rows_file(tmp_path / "q.jsonl", [question(4, id=f"q{i}", **SECRETS) for i in range(2)])
    engine = ScriptedEngine()
    with using(engine):
        for ex in PROGRAM.load(path, None):
            MultipleChoice(cot=cot)(**ex.inputs())
    text = engine.all_text()
    assert "A question with 4 options" in text and "option text D" in text
    assert "SECRET" not in text


def test_registered_with_mdagents_data_and_metric():
    assert get_program("mcq") is PROGRAM and PROGRAM.defaults == {"cot": False}
    with pytest.raises(ValueError, match="cot must be true or false"):
        MultipleChoice(cot="yes")


# settings from the command line --------------------------------------------------------------
@pytest.fixture()
def scripted_cli(monkeypatch):
    engines: list[ScriptedEngine] = []

    def make(spec: str, *args: Any, **kwargs: Any) -> ScriptedEngine:
        engines.append(ScriptedEngine(lambda call: {"reasoning": "Because of the findings in the question stem.", "answer": "A"}
                                      if not call.choices and "answer" in call.constraint.json_schema["properties"]
                                      else None))
        return engines[-1]

    monkeypatch.setattr("medprog.cli_common.build_lm", make)
    return engines


def test_eval_and_run_take_build_settings(tmp_path, scripted_cli):
    data = rows_file(tmp_path / "q.jsonl", [question(4, id=i) for i in range(3)])
    r = runner.invoke(app, ["eval", "mcq", "--data", str(data), "--lm", "local:x", "--out", str(tmp_path / "cot"),
                            "-o", "cot=true", "--no-progress", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "cot" / "run.json").read_text())["build"] == {"cot": True}
    assert all(isinstance(c.constraint, JsonConstraint) for c in scripted_cli[-1].calls)
    inp = tmp_path / "in.json"
    inp.write_text(json.dumps({"question": "Which?", "options": {"A": "x", "B": "y", "C": "z"}}))
    r = runner.invoke(app, ["run", "mdagents", "--input", str(inp), "--lm", "local:x", "-o", "mode=basic",
                            "-o", "n_experts=2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["mode"] == "basic" and out["complexity"] is None and out["usage"]["calls"] == 1 + 2 + 1


def test_unknown_or_bad_settings_are_one_line_errors(tmp_path, scripted_cli):
    data = rows_file(tmp_path / "q.jsonl", [question(4)])
    base = ["--data", str(data), "--lm", "local:x", "--out", str(tmp_path / "r")]
    r = runner.invoke(app, ["eval", "mdagents", *base, "-o", "mdoe=basic"], catch_exceptions=False)
    assert r.exit_code == 2 and "-o mdoe: not a setting of mdagents; valid:" in err(r) and "mode" in err(r)
    r = runner.invoke(app, ["eval", "mdagents", *base, "-o", "mode=expert"], catch_exceptions=False)
    assert r.exit_code == 2 and "unknown mode 'expert'" in err(r)
    r = runner.invoke(app, ["eval", "mcq", *base, "-o", "cot"], catch_exceptions=False)
    assert r.exit_code == 2 and "expected KEY=VALUE" in err(r)


# degenerate content -----------------------------------------------------------------------
def test_degenerate_strings_flags_letters_copies_and_one_character_fields():
    from medprog.metrics.content import degenerate_strings
    from medprog.signatures.mcq import RecruitExperts
    from medprog.engines.constraints import constraint_for

    schema = constraint_for(RecruitExperts, {}).json_schema
    opts = {"A": "Aspirin", "B": "Heparin"}
    stem = "A 70-year-old woman presents with sudden chest pain radiating to the back and unequal arm pulses."
    value = {"experts": [
        {"role": "A", "description": "heparin", "hierarchy": "independent"},
        {"role": "Cardiologist", "description": "sudden chest pain radiating to the back and unequal arm",
         "hierarchy": "B."},
    ]}
    check = degenerate_strings(value, schema, opts, stem)
    assert check.n_fields == 6
    assert [d.split(":")[0] for d in check.degenerate] == [
        "$.experts[0].role", "$.experts[0].description", "$.experts[1].description", "$.experts[1].hierarchy"]
    assert "(short)" in check.degenerate[0] and "(option)" in check.degenerate[1]
    assert "(question)" in check.degenerate[2] and "(short)" in check.degenerate[3]  # "B." is a bare letter


# on the real model ---------------------------------------------------------------------------
@pytest.mark.slow
def test_mcq_on_smollm2_answers_valid_letters_and_reasons_with_content(smollm2_engine, tmp_path):
    from medprog.metrics.content import degenerate_strings

    path = rows_file(tmp_path / "q.jsonl", [question(3, id="three"), question(5, id="five", **SECRETS)])
    examples = PROGRAM.load(path, None)
    with using(smollm2_engine, max_tokens=256):
        for cot, ex in [(False, examples[0]), (False, examples[1]), (True, examples[1])]:
            pred = MultipleChoice(cot=cot)(**ex.inputs())
            assert pred.answer in ex.options and pred.usage["calls"] == 1
            if cot:  # the reasoning field is bounded below: never a bare letter or a copied option
                assert len(pred.reasoning) >= 40
                schema = {"type": "object", "properties": {"reasoning": {"type": "string"}}}
                check = degenerate_strings({"reasoning": pred.reasoning}, schema, ex.options)
                assert check.n_fields == 1 and not check.degenerate
