"""mdagents: routing, early stop, team order, letters, prompt hygiene, data, metric, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from programs_fixtures import ScriptedEngine, tiny_engine, using, vllm_engine

from medprog.data.medqa import MedQAFormatError, load_medqa, synth_medqa
from medprog.programs.mdagents import PROGRAM, MDAgents
from medprog.programs.registry import get_program

MEDQA_HARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "medqa" / "test_hard.jsonl"
Q = {"question": "A 60-year-old man has crushing chest pain. Most likely diagnosis?",
     "options": {"A": "MI", "B": "GERD", "C": "Costochondritis", "D": "Panic attack"}}


def answer_b(call):
    if call.choices:
        return None
    if "answer" in call.constraint.json_schema["properties"]:
        return {"answer": "B", "reasoning": "because the pain is crushing and central"}
    return None


@pytest.mark.parametrize("route", ["basic", "intermediate", "advanced"])
def test_adaptive_routing_follows_the_complexity_assessment(route):
    def script(call):
        if call.step == "complexity":
            return route
        return answer_b(call)

    engine = ScriptedEngine(script)
    with using(engine):
        pred = MDAgents(mode="adaptive", n_experts=2, rounds=1, turns=1)(**Q)
    assert pred.mode == route and pred.complexity == route and pred.answer == "B"
    steps = set(engine.steps())
    assert engine.count("complexity") == 1
    assert ("arbitrator" in steps) == (route == "basic")
    assert ("moderator" in steps) == (route == "intermediate")
    assert ("final_decision" in steps) == (route == "advanced")


def test_fixed_mode_skips_the_assessment_and_basic_call_count():
    engine = ScriptedEngine(answer_b)
    with using(engine):
        pred = MDAgents(mode="basic", n_experts=3)(**Q)
    assert engine.count("complexity") == 0
    # recruit + 3 independent experts + arbitrator (a short recruit list is topped up)
    assert [engine.count(s) for s in ("recruit", "expert", "arbitrator")] == [1, 3, 1]
    assert pred.usage["calls"] == 5 == engine.ledger.total.calls


def test_answers_are_constrained_to_the_questions_own_letters():
    engine = ScriptedEngine(answer_b)
    ynm = {"question": "Is aspirin an antiplatelet drug?", "options": {"A": "yes", "B": "no", "C": "maybe"}}
    with using(engine):
        MDAgents(mode="basic", n_experts=1)(**ynm)
    arb = next(c for c in engine.calls if c.step == "arbitrator")
    assert arb.allowed("answer") == ["A", "B", "C"] and arb.title == "Arbitrate"


def test_demos_outside_the_questions_letters_are_not_shown():
    import dspy

    program = MDAgents(mode="basic", n_experts=1)
    demo = lambda tag, letter: dspy.Example(question=tag, options={"A": "x"}, opinions=[],  # noqa: E731
                                            reasoning="a demo reasoning that is long enough to show", answer=letter)
    program.arbitrate.demos = [demo("DEMO-E", "E"), demo("DEMO-B", "B")]
    engine = ScriptedEngine(answer_b)
    with using(engine):
        program(question="Is aspirin an antiplatelet drug?", options={"A": "yes", "B": "no", "C": "maybe"})
    arb = next(c for c in engine.calls if c.step == "arbitrator")
    shown = "\n".join(m["content"] for m in arb.messages)
    assert "DEMO-B" in shown and "DEMO-E" not in shown


def test_intermediate_stops_early_when_nobody_speaks():
    engine = ScriptedEngine(lambda call: {"speak": False} if call.step == "debate" else answer_b(call))
    with using(engine):
        pred = MDAgents(mode="intermediate", n_experts=3, rounds=3, turns=3)(**Q)
    assert engine.count("debate") == 3  # one silent turn (3 experts), then the discussion ends
    assert pred.trace["turns"] == 1 and pred.trace["messages"] == []
    assert engine.count("expert_final") == 3 and engine.count("moderator") == 1


def test_intermediate_runs_rounds_times_turns_while_experts_speak_and_routes_messages():
    def script(call):
        if call.step == "debate":
            me = call.user.split("me:\n", 1)[1].split("\n", 1)[0]
            to = [2] if me.startswith("1.") else [1]  # 1 ↔ 2; expert 3 writes to 1
            return {"speak": True, "to": to, "message": f"note from {me}"}
        return answer_b(call)

    engine = ScriptedEngine(script)
    with using(engine):
        pred = MDAgents(mode="intermediate", n_experts=3, rounds=2, turns=2)(**Q)
    assert engine.count("debate") == 3 * 2 * 2 and pred.trace["turns"] == 4
    to_sets = [c.allowed("to") for c in engine.calls if c.step == "debate"][:3]
    assert sorted(map(sorted, to_sets)) == [[1, 2], [1, 3], [2, 3]]  # nobody can address themself
    # recruits top up to Internist, Emergency physician, Family physician; each final answer sees
    # only the messages it sent or received
    finals = {c.user.split("role:\n", 1)[1].split("\n", 1)[0]: c.user for c in engine.calls if c.step == "expert_final"}
    assert "note from 1." in finals["Emergency physician"] and "note from 2." in finals["Internist"]
    assert "note from 3." in finals["Internist"] and "note from 3." not in finals["Emergency physician"]
    assert "note from 1." not in finals["Family physician"] and "note from 3." in finals["Family physician"]


def test_advanced_runs_teams_in_order_and_the_final_decision_sees_every_report():
    team = lambda name: {"name": name, "lead": {"role": f"{name} lead", "expertise": "hearts"},  # noqa: E731
                         "members": [{"role": f"{name} m{i}", "expertise": "hearts"} for i in (1, 2)]}
    seen_earlier: list[str] = []

    def script(call):
        if call.step == "plan_teams":
            return {"plan": {"initial_assessment": team("IAT"), "specialist_teams": [team("Cardio"), team("Extra")],
                             "final_review": team("FRDT")}}
        if call.title == "LeadSummary":
            name = call.user.split("team:\n", 1)[1].split("\n", 1)[0]
            return {"report": f"REPORT-OF-{name}: what the team found, summarised by its lead"}
        if call.title == "AssignTasks":
            seen_earlier.append(call.user)
        return answer_b(call)

    engine = ScriptedEngine(script)
    with using(engine):
        pred = MDAgents(mode="advanced", n_specialist_teams=1, team_size=2)(**Q)
    order = [r["team"] for r in pred.trace["reports"]]
    assert order == ["IAT", "Cardio", "FRDT"]  # specialist teams trimmed to the setting
    # the lead of each team sees exactly the earlier teams' reports
    assert "REPORT-OF" not in seen_earlier[0]
    assert "REPORT-OF-IAT" in seen_earlier[1] and "REPORT-OF-Cardio" not in seen_earlier[1]
    assert "REPORT-OF-Cardio" in seen_earlier[2]
    final = next(c for c in engine.calls if c.step == "final_decision")
    assert all(f"REPORT-OF-{t}" in final.user for t in order)
    # plan + per team (assign + 2 members + summary) + final
    assert engine.ledger.total.calls == 1 + 3 * 4 + 1 == pred.usage["calls"]


def test_only_question_and_options_reach_a_prompt(tmp_path):
    secrets = {"rationale": "SECRET-RATIONALE-1", "cot": "SECRET-COT-2", "answer": "SECRET-ANSWER-TEXT-3",
               "model_answer": "SECRET-MODEL-4", "metamap_phrases": ["SECRET-PHRASE-5"]}
    rows = [{**Q, "answer_idx": "A", "id": f"q{i}", **secrets} for i in range(2)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = PROGRAM.load(path, None)
    assert set(examples[0].inputs().keys()) == {"question", "options"}
    for mode in ("basic", "intermediate", "advanced", "adaptive"):
        engine = ScriptedEngine(lambda call: {"speak": True, "to": [], "message": "m"} if call.step == "debate"
                                else answer_b(call))
        with using(engine):
            for ex in examples:
                MDAgents(mode=mode, n_experts=2, rounds=1, turns=1)(**ex.inputs())
        text = engine.all_text()
        assert Q["question"] in text
        for s in ["SECRET-RATIONALE-1", "SECRET-COT-2", "SECRET-ANSWER-TEXT-3", "SECRET-MODEL-4", "SECRET-PHRASE-5"]:
            assert s not in text, (mode, s)


def test_medqa_loader_on_shared_data_and_synthetic(tmp_path):
    if MEDQA_HARD.is_file():
        items = load_medqa(MEDQA_HARD)
        assert len(items) == 100 and all(i.answer in i.options for i in items)
        assert len({i.id for i in items}) == 100
    synth_medqa(tmp_path / "synth", n=30, seed=3)
    synth_medqa(tmp_path / "again.jsonl", n=30, seed=3)
    splits = [(tmp_path / "synth" / f"{s}.jsonl").read_text() for s in ("train", "dev", "test")]
    assert "".join(splits) == (tmp_path / "again.jsonl").read_text()
    assert len(load_medqa(tmp_path / "synth")) == 3  # a directory without a split: test.jsonl
    items = load_medqa(tmp_path / "again.jsonl")
    assert {len(i.options) for i in items} == {3, 4, 5} and all(i.answer in i.options for i in items)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "options": {"A": "x", "B": "y"}, "answer_idx": "E"}) + "\n")
    with pytest.raises(MedQAFormatError, match="bad.jsonl:1"):
        load_medqa(bad)


def test_metrics_accuracy_and_cost_per_mode():
    import dspy

    golds = {"a": "A", "b": "B", "c": "C"}
    exs = [dspy.Example(id=k, answer=v) for k, v in golds.items()]
    recs = [{"id": "a", "answer": "A", "mode": "basic",
             "usage": {"calls": 5, "prompt_tokens": 100, "completion_tokens": 10}},
            {"id": "b", "answer": "C", "mode": "advanced",
             "usage": {"calls": 15, "prompt_tokens": 900, "completion_tokens": 90}}]
    m = PROGRAM.metrics(exs, recs)
    assert m["accuracy"] == pytest.approx(1 / 3) and m["accuracy_answered"] == 0.5 and m["n_answered"] == 2
    assert m["calls_per_question"] == 10 and m["per_mode"]["advanced"]["prompt_tokens_per_question"] == 900
    assert get_program("mdagents") is PROGRAM


def test_end_to_end_on_a_tiny_local_model(tmp_path):
    engine = tiny_engine()
    synth_medqa(tmp_path / "q.jsonl", n=2, seed=1)
    examples = PROGRAM.load(tmp_path / "q.jsonl", None)
    engine.ledger.reset()
    with using(engine, max_tokens=1500):
        program = PROGRAM.build(mode="basic", n_experts=2)
        preds = [program(**ex.inputs()) for ex in examples]
    for ex, pred in zip(examples, preds):
        assert pred.answer in ex.options and pred.mode == "basic"
        assert pred.usage["calls"] == 1 + 2 + 1
        rec = PROGRAM.to_record(ex, pred)
        json.dumps(rec)
    assert engine.ledger.total.calls == 8 and engine.ledger.total.errors == 0
    assert set(engine.ledger.steps) == {"recruit", "expert", "arbitrator"}
    assert 0.0 <= PROGRAM.metrics(examples, [PROGRAM.to_record(e, p) for e, p in zip(examples, preds)])["accuracy"] <= 1


@pytest.mark.slow
def test_end_to_end_against_a_vllm_server(tmp_path):
    engine = vllm_engine()
    synth_medqa(tmp_path / "q.jsonl", n=3, seed=5)
    examples = PROGRAM.load(tmp_path / "q.jsonl", None)
    with using(engine, max_tokens=512):
        preds = [PROGRAM.build(mode=mode, n_experts=2, rounds=1, turns=1)(**ex.inputs())
                 for mode, ex in zip(("basic", "intermediate", "advanced"), examples)]
    for ex, pred in zip(examples, preds):
        assert pred.answer in ex.options
    assert preds[0].usage["calls"] == 1 + 2 + 1
    assert preds[1].usage["calls"] == 1 + 2 + 2 * preds[1].trace["turns"] + 2 + 1
    teams = preds[2].trace["teams"]  # the plan decides how many teams and members (within the bounds)
    assert 2 <= len(teams) <= 3 and all(1 <= len(t["members"]) <= 2 for t in teams)
    assert preds[2].usage["calls"] == 1 + sum(2 + len(t["members"]) for t in teams) + 1
    assert engine.ledger.total.calls == sum(p.usage["calls"] for p in preds) and engine.ledger.total.errors == 0
