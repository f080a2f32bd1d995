"""hospital: turn limit, agents' views, examiner default, dispute rounds, precomputed mode, data, metric."""

from __future__ import annotations

import json

import pytest
from programs_fixtures import ScriptedEngine, tiny_engine, using, vllm_engine

from medprog.data.hospital import HospitalFormatError, load_hospital, synth_hospital
from medprog.engines.constraints import ConstraintViolation, check_text
from medprog.metrics.diagnosis import diagnosis_prf, judge_summary, split_diagnoses
from medprog.programs.hospital import NOT_FOUND, PROGRAM, Hospital, judge

CHINESE_CASE = {
    "id": 7, "department": ["呼吸内科"], "diseases": "社区获得性肺炎",
    "profile": "<病情陈述> 我咳嗽发烧好几天了\n<性别> 男\n<年龄> 45\n<工作与生活> 教师\n<说法方式> 话少",
    "medical_record": {
        "一般资料": "男，45岁", "主诉": "咳嗽发热5天", "现病史": "5天前受凉后咳嗽", "既往史": "体健",
        "查体": "右下肺湿啰音", "辅助检查": {"胸片": "右下肺实变"}, "初步诊断": "1. 社区获得性肺炎\n2、高血压",
        "诊断依据": "发热咳嗽", "鉴别诊断": "肺结核", "诊治经过": "抗感染", "分析总结": "略",
    },
}


@pytest.fixture()
def cases(tmp_path):
    synth_hospital(tmp_path / "h", n=3, seed=2)
    return PROGRAM.load(tmp_path / "h", None)


def test_loader_maps_chinese_and_english_layouts(tmp_path):
    p = tmp_path / "patients.json"
    p.write_text(json.dumps([CHINESE_CASE], ensure_ascii=False))
    (case,) = load_hospital(p)
    assert case.id == "7" and case.profile.complaint == "我咳嗽发烧好几天了" and case.profile.age == "45"
    assert case.record.tests == "胸片: 右下肺实变" and case.diseases == ["社区获得性肺炎"]
    assert case.reference_diagnosis.startswith("1. 社区获得性肺炎")  # no 诊断结果: falls back to 初步诊断
    assert split_diagnoses(case.reference_diagnosis) == ["社区获得性肺炎", "高血压"]
    synth_hospital(tmp_path / "s", n=20, seed=1)
    synth = load_hospital(tmp_path / "s")
    assert len(synth) == 20 and all(c.record.final_diagnosis and c.profile.complaint for c in synth)
    assert [len(load_hospital(tmp_path / "s", s)) for s in ("train", "dev", "test")] == [16, 2, 2]
    synth_hospital(tmp_path / "t.json", n=20, seed=1)
    assert (tmp_path / "s" / "patients.json").read_text() == (tmp_path / "t.json").read_text()
    with pytest.raises(FileExistsError):
        synth_hospital(tmp_path / "t.json", n=2)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": 1, "profile": "", "medical_record": {"主诉": "x"}}]))
    with pytest.raises(HospitalFormatError, match=r"bad.json\[0\].*诊断结果"):
        load_hospital(bad)


def test_consultation_turns_patient_examiner_and_not_found(cases):
    actions = iter([("ask", "How long have you had it?"), ("test", "Complete blood count"), ("test", "Brain MRI"),
                    ("finish", "")])

    def script(call):
        if call.step == "doctor":
            a, t = next(actions)
            return {"action": a, "text": t}
        if call.step == "examiner":
            found = "Complete blood count" in call.user.split("request:\n", 1)[1]
            return {"found": found, "result": "WBC high" if found else "made up"}
        if call.step == "report":
            return {"report": {"symptoms": ["cough"], "tests": [], "diagnoses": ["Pneumonia"], "basis": "b",
                               "treatment": "t"}}
        return {"reply": "about a week"}

    engine = ScriptedEngine(script)
    with using(engine):
        pred = Hospital(max_turns=10)(**cases[0].inputs())
    roles = [t["role"] for t in pred.dialogue]
    assert roles == ["patient", "doctor", "patient", "doctor", "examiner", "doctor", "examiner"]
    assert pred.dialogue[4]["text"] == "WBC high" and pred.dialogue[6]["text"] == NOT_FOUND
    assert [engine.count(s) for s in ("doctor", "patient", "examiner", "report")] == [4, 1, 2, 1]
    assert pred.report.diagnoses == ["Pneumonia"] and pred.usage["calls"] == 8


def test_consultation_stops_at_max_turns(cases):
    engine = ScriptedEngine(lambda call: {"action": "ask", "text": "more?"} if call.step == "doctor" else None)
    with using(engine):
        Hospital(max_turns=3)(**cases[0].inputs())
    assert [engine.count(s) for s in ("doctor", "patient", "report")] == [3, 3, 1]


def test_each_agent_sees_only_its_part_of_the_record(cases):
    ex = cases[0]
    rec = ex.case["record"]
    engine = ScriptedEngine(lambda call: {"action": ("ask", "test", "finish")[min(call.user.count("Doctor:"), 2)],
                                          "text": "q"} if call.step == "doctor" else None)
    with using(engine):
        Hospital(mode="collaborative", doctors=2, rounds=1, max_turns=3)(**ex.inputs())
    by = lambda s: "\n".join(m["content"] for c in engine.calls if c.step == s for m in c.messages)  # noqa: E731
    exam_line = rec["physical_exam"]
    assert rec["past_history"] in by("patient") and exam_line not in by("patient")
    assert exam_line in by("examiner") and rec["past_history"] not in by("examiner")
    for s in ("doctor", "report", "host", "revise", "host_final", "patient", "examiner"):
        assert rec["final_diagnosis"] not in by(s) and rec["treatment_course"] not in by(s), s


def test_dispute_rounds_are_bounded_by_d_and_at_most_three_points(cases):
    disputes = [{"point": "p1", "ask": "patient", "question": "fever?"},
                {"point": "p2", "ask": "examiner", "question": "chest x-ray"},
                {"point": "p3", "ask": "none", "question": ""}]

    def script(call):
        if call.step == "doctor":
            return {"action": "finish"}
        if call.step == "host":
            return {"judgement": {"symptoms": ["cough"], "tests": [], "verdict": "continue", "disputes": disputes}}
        return None

    engine = ScriptedEngine(script)
    with using(engine):
        pred = Hospital(mode="collaborative", doctors=3, rounds=2)(**cases[0].inputs())
    # 3 doctors × (1 finish + 1 report); 2 rounds × (host + patient + examiner + 3 revisions); final
    assert [engine.count(s) for s in ("doctor", "report", "host", "patient", "examiner", "revise", "host_final")] \
        == [3, 3, 2, 2, 2, 6, 1]
    assert len(pred.rounds) == 2 and all(r["verdict"] == "continue" for r in pred.rounds)
    host_call = next(c for c in engine.calls if c.step == "host")
    schema = host_call.constraint.json_schema
    assert schema["$defs"]["HostJudgement"]["properties"]["disputes"]["maxItems"] == 3
    four = {"judgement": {"symptoms": [], "tests": [], "verdict": "continue", "disputes": disputes + disputes[:1]}}
    with pytest.raises(ConstraintViolation, match="more than 3 items"):
        check_text(host_call.constraint, json.dumps(four))
    second_host = [c for c in engine.calls if c.step == "host"][1]
    assert "Round 1" in second_host.user  # the host sees the answers gathered so far


def test_agreement_ends_the_rounds(cases):
    verdicts = iter(["continue", "agree"])

    def script(call):
        if call.step == "doctor":
            return {"action": "finish"}
        if call.step == "host":
            return {"judgement": {"symptoms": [], "tests": [], "verdict": next(verdicts), "disputes": []}}
        return None

    engine = ScriptedEngine(script)
    with using(engine):
        Hospital(mode="collaborative", doctors=2, rounds=5)(**cases[0].inputs())
    assert [engine.count(s) for s in ("host", "revise", "host_final")] == [2, 2, 1]


def test_precomputed_consultations_are_read_not_rerun(cases, tmp_path):
    report = {"symptoms": ["s"], "tests": [], "diagnoses": ["Pneumonia"], "basis": "b", "treatment": "t"}
    f1, f2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    f1.write_text("".join(json.dumps({"id": c.id, "record": {"id": c.id, "dialogue": [], "report": report}}) + "\n"
                          for c in cases))
    f2.write_text(json.dumps({"id": cases[0].id, "report": report, "dialogue": []}) + "\n")  # bare records
    engine = ScriptedEngine(lambda call: {"judgement": {"symptoms": [], "tests": [], "verdict": "agree",
                                                        "disputes": []}} if call.step == "host" else
                            ({"action": "finish"} if call.step == "doctor" else None))
    program = Hospital(mode="collaborative", precomputed=[str(f1), str(f2)], rounds=2)
    with using(engine):
        pred = program(**cases[0].inputs())
        assert engine.count("doctor") == 0 and [c["source"] for c in pred.consultations] == ["precomputed"] * 2
        pred = program(**cases[1].inputs())  # missing from b.jsonl: that doctor consults live
    assert engine.count("doctor") == 1 and [c["source"] for c in pred.consultations] == ["precomputed", "live"]


def test_metrics_and_judge(cases):
    assert diagnosis_prf([["Essential (primary) hypertension", "Pneumonia"]],
                         [["essential primary hypertension", "asthma"]])["f1"] == pytest.approx(0.5)
    recs = [{"id": cases[0].id, "diagnoses": list(cases[0].reference), "usage": {"calls": 4}},
            {"id": cases[1].id, "diagnoses": ["something else"], "usage": {"calls": 6}}]
    m = PROGRAM.metrics(cases, recs)
    assert m["recall"] == pytest.approx(1 / 3) and m["precision"] == pytest.approx(0.5)
    assert m["n_answered"] == 2 and m["calls_per_case"] == 5
    assert judge_summary([{"symptoms": "A", "tests": "B", "diagnosis": "C", "basis": "D", "treatment": "A"}]) \
        == {"judge_symptoms": 4, "judge_tests": 3, "judge_diagnosis": 2, "judge_basis": 1, "judge_treatment": 4,
            "judge_mean": 2.8}
    report = {"symptoms": [], "tests": [], "diagnoses": ["x"], "basis": "b", "treatment": "t"}
    engine = ScriptedEngine(lambda call: {"grades": {"symptoms": "B", "tests": "B", "diagnosis": "A", "basis": "C",
                                                     "treatment": "D"}})
    with using(engine):
        scores = judge(cases, [{"id": c.id, "report": report} for c in cases])
    assert scores["judge_diagnosis"] == 4 and engine.count("judge") == 3


def test_end_to_end_on_a_tiny_local_model(cases):
    engine = tiny_engine()
    engine.ledger.reset()
    with using(engine, max_tokens=2000):
        pred = PROGRAM.build(max_turns=2)(**cases[0].inputs())
    rec = PROGRAM.to_record(cases[0], pred)
    json.dumps(rec)
    doctor_turns = sum(t["role"] == "doctor" for t in pred.dialogue)
    steps = engine.ledger.steps
    assert steps["doctor"].calls <= 2 and steps["report"].calls == 1
    answered = sum(steps[s].calls for s in ("patient", "examiner") if s in steps)
    assert answered == doctor_turns and pred.usage["calls"] == engine.ledger.total.calls
    assert engine.ledger.total.errors == 0 and isinstance(rec["report"]["diagnoses"], list)


@pytest.mark.slow
def test_end_to_end_against_a_vllm_server(cases):
    engine = vllm_engine()
    with using(engine, max_tokens=512):
        pred = PROGRAM.build(mode="collaborative", doctors=2, rounds=1, max_turns=2)(**cases[0].inputs())
    rec = PROGRAM.to_record(cases[0], pred)
    json.dumps(rec)
    steps = engine.ledger.steps
    turns = sum(t["role"] == "doctor" for c in pred.consultations for t in c["dialogue"])
    asked = sum(1 for r in pred.rounds for d in r["disputes"] if d["ask"] != "none" and r["verdict"] == "continue")
    revised = 2 * sum(r["verdict"] == "continue" for r in pred.rounds)
    assert steps["report"].calls == 2 and steps["host"].calls == 1 and steps["host_final"].calls == 1
    assert sum(steps[s].calls for s in ("patient", "examiner") if s in steps) == turns + asked
    assert (steps["revise"].calls if "revise" in steps else 0) == revised
    assert engine.ledger.total.calls == pred.usage["calls"] and engine.ledger.total.errors == 0
