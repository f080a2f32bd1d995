"""creason: task builder (MI filter, options, outcome), program, reward, end to end."""

from __future__ import annotations

import csv
import json

import pytest
from programs_fixtures import ScriptedEngine, tiny_engine, using, vllm_engine

from medprog.data.patient_registry import build_tasks, fit_gmm, load_registry, split_rows, write_tasks
from medprog.data.synth_registry import synth_registry
from medprog.programs.creason import PROGRAM, CReason, grpo_reward


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    out = tmp_path_factory.mktemp("reg")
    synth_registry(out, n=400, seed=0)
    return load_registry(out)


def test_mi_filter_drops_near_copies_of_the_masked_variable(registry):
    tasks = build_tasks(registry, seed=3, outcome_share=0.0)
    by_var = {}
    for t in tasks:
        by_var.setdefault(t.variable, t)
    assert by_var["creatinine"].dropped == ["egfr"] and by_var["egfr"].dropped == ["creatinine"]
    assert "eGFR" not in by_var["creatinine"].record and "serum creatinine" not in by_var["creatinine"].record
    assert by_var["age"].dropped == [] and "- sex:" in by_var["age"].record and "- age:" not in by_var["age"].record
    assert all(t.dropped == [] for t in build_tasks(registry, seed=3, outcome_share=0.0, mi_threshold=1.0))


def test_mi_filter_on_any_csv(tmp_path):
    path = tmp_path / "r.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "x", "x_copy", "z"])
        for i in range(200):
            w.writerow([i, i % 17 + 0.5, (i % 17) * 2, ["a", "b", "c"][(i * 7 // 3) % 3]])
    reg = load_registry(path)
    assert [v.type for v in reg.variables] == ["numeric", "numeric", "categorical"]
    tasks = build_tasks(reg, seed=0)
    x = next(t for t in tasks if t.variable == "x")
    assert x.dropped == ["x_copy"] and "- z:" in x.record and x.record.startswith("## Record")


def test_options_numeric_spread_by_mixture_sd_and_categorical_by_frequency(registry):
    tasks = build_tasks(registry, seed=1, outcome_share=0.0)
    for t in tasks:
        assert len(set(t.options.values())) == len(t.options) and list(t.options) == list("ABCDE")[: len(t.options)]
        row = next(r for r in registry.rows if t.id.startswith(f"{r['_id']}:"))
        var = registry.var(t.variable)
        truth = t.options[t.answer]
        if var.type == "numeric":
            assert len(t.options) == 5
            assert float(truth.split()[0]) == pytest.approx(row[var.name], abs=10 ** -var.decimals)
            col = [x for x in registry.column(var.name) if x is not None]
            gmm = fit_gmm(col)
            step = 10 ** -var.decimals
            sigma = max(gmm.stds[gmm.component(row[var.name])], step)
            for v in t.options.values():  # distractors sit at whole multiples of the component's sd
                k = (float(v.split()[0]) - row[var.name]) / sigma
                assert abs(k - round(k)) <= step / sigma + 1e-6 and float(v.split()[0]) >= min(col) - sigma
        else:
            assert truth == row[var.name]
    smoking = next(t for t in tasks if t.variable == "smoking")
    assert set(smoking.options.values()) == {"current", "former", "never"}


def test_outcome_question_never_shows_the_outcome(registry):
    tasks = build_tasks(registry, seed=2, outcome_share=1.0, n=20)
    assert all(t.kind == "outcome" and t.question == "Did the patient die in hospital?" for t in tasks)
    assert all(set(t.options.values()) == {"yes", "no"} for t in tasks)
    masked = build_tasks(registry, seed=2, outcome_share=0.0, n=20)
    assert all("in-hospital death" not in t.record for t in tasks + masked)
    assert build_tasks(registry, seed=2) == build_tasks(registry, seed=2)


def test_splits_are_disjoint_and_complete(registry):
    train, dev, test = (set(split_rows(registry, s)) for s in ("train", "dev", "test"))
    assert not train & test and not train & dev and not dev & test
    assert len(train) + len(dev) + len(test) == len(registry.rows) and len(test) > 40 and len(dev) > 10
    assert split_rows(registry, "val") == split_rows(registry, "dev")
    patients = lambda rows: {registry.rows[i]["_id"] for i in rows}  # noqa: E731
    assert not patients(train) & patients(test) and not patients(dev) & patients(test)


def test_program_one_constrained_call_with_the_tasks_letters(registry, tmp_path):
    tasks = [t for t in build_tasks(registry, seed=1, n=30) if len(t.options) == 2][:1] + \
            [t for t in build_tasks(registry, seed=1, n=30) if len(t.options) == 5][:1]
    examples = PROGRAM.load(write_tasks(tasks, tmp_path / "tasks.jsonl"), None)
    assert set(examples[0].inputs().keys()) == {"record", "question", "options"}
    engine = ScriptedEngine(lambda call: {"answer": call.allowed("answer")[-1], "reasoning": "r"})
    with using(engine):
        preds = [CReason()(**ex.inputs()) for ex in examples]
    assert [c.allowed("answer") for c in engine.calls] == [["A", "B"], ["A", "B", "C", "D", "E"]]
    assert [p.answer for p in preds] == ["B", "E"] and all(p.usage["calls"] == 1 for p in preds)
    assert engine.steps() == ["reason", "reason"]
    recs = [PROGRAM.to_record(e, p) for e, p in zip(examples, preds)]
    m = PROGRAM.metrics(examples, recs)
    assert m["accuracy"] == sum(r["correct"] for r in recs) / 2 and set(m["per_kind"]) <= {"masked", "outcome"}


def test_grpo_reward_is_the_exact_letter():
    assert grpo_reward(['{"reasoning":"x","answer":"C"}', "B", [{"role": "assistant", "content": '{"answer":"A"}'}]],
                       ["C", "C", "A"]) == [1.0, 0.0, 1.0]


def test_csv_loader_and_end_to_end_on_a_tiny_local_model(tmp_path):
    synth_registry(tmp_path, n=60, seed=4)
    path = tmp_path
    test = PROGRAM.load(path, "test")
    assert test and not {e.id for e in test} & {e.id for e in PROGRAM.load(path, "train")}
    engine = tiny_engine()
    engine.ledger.reset()
    with using(engine, max_tokens=800):
        program = PROGRAM.build()
        preds = [program(**ex.inputs()) for ex in test[:2]]
    assert all(p.answer in ex.options for p, ex in zip(preds, test)) and engine.ledger.total.calls == 2
    assert engine.ledger.total.errors == 0 and set(engine.ledger.steps) == {"reason"}
    json.dumps([PROGRAM.to_record(e, p) for e, p in zip(test, preds)])


@pytest.mark.slow
def test_end_to_end_against_a_vllm_server(registry, tmp_path):
    engine = vllm_engine()
    tasks = build_tasks(registry, seed=9, n=4)
    examples = PROGRAM.load(write_tasks(tasks, tmp_path / "t.jsonl"), None)
    with using(engine, max_tokens=512):
        preds = [PROGRAM.build()(**ex.inputs()) for ex in examples]
    assert all(p.answer in ex.options for p, ex in zip(preds, examples))
    assert engine.ledger.total.calls == 4 and engine.ledger.total.errors == 0
