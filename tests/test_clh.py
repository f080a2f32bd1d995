"""clh: coding rules, stage flow with constrained picks, index cache, data, metrics, end to end."""

from __future__ import annotations

import json
import os
import stat

import pytest
from programs_fixtures import ScriptedEngine, index_dir, tiny_engine, using, vllm_engine

from medprog.data.icd_notes import SYNTH_CODES, load_icd_notes, synth_icd_notes
from medprog.metrics.icd import icd_metrics
from medprog.programs import icd_index
from medprog.programs.clh import PROGRAM, CodeLikeHumans
from medprog.programs.multiagent import narrowed_call
from medprog.programs.icd_index import (
    CodeIndex,
    billable_only,
    excludes1_conflict,
    parse_refs,
    pull_code_first,
    resolve_excludes1,
    tabular_notes,
)

SCOPE = ["E10.9", "E11.9", "E11.6", "N18", "D63", "I10"]


@pytest.fixture()
def program():
    return CodeLikeHumans(top_k=3, scope=SCOPE, index_dir=index_dir())


def test_code_references_in_notes_parse_to_ranges():
    (r,) = parse_refs("diabetes mellitus (E08-E13 with .42)")
    assert r.matches("E11.42") and not r.matches("E11.40") and not r.matches("E14.42")
    refs = parse_refs("hypothyroidism, acquired (E00-E03.-), (I15.0, I15.1), (G35-)")
    assert [(x.lo, x.hi) for x in refs] == [("E00", "E03"), ("I15.0", "I15.0"), ("I15.1", "I15.1"), ("G35", "G35")]
    assert refs[0].matches("E03.9") and not refs[0].matches("E04.0")
    assert parse_refs("polyneuropathy (in):") == []


def test_excludes1_rule_never_keeps_both_codes():
    assert excludes1_conflict("E11.9", "E10.9") and excludes1_conflict("E10.9", "E11.9")  # E11 excludes1 E10.-
    assert not excludes1_conflict("E11.9", "I10")
    assert resolve_excludes1(["E10.9", "I10", "E11.9"]) == (["E10.9", "I10"], ["E11.9"])
    assert resolve_excludes1(["E11.9", "E10.9"]) == (["E11.9"], ["E10.9"])  # the earlier code wins


def test_code_first_pulls_its_etiology_code_before_it():
    assert "N18" in tabular_notes("D63.1").code_first
    assert pull_code_first(["D63.1", "I10"], ["J18.9", "N18.4", "N18.30"]) == ["N18.4", "D63.1", "I10"]
    assert pull_code_first(["I10", "D63.1", "N18.30"], ["N18.4"]) == ["I10", "N18.30", "D63.1"]  # already assigned
    assert pull_code_first(["D63.1"], ["J18.9"]) == ["D63.1"]  # nothing to pull from


def test_only_billable_codes_are_assigned():
    assert billable_only(["E11", "E11.9", "N18.3", "N18.30", "e119", "X99.9"]) == ["E11.9", "N18.30"]


def test_stages_constrain_picks_and_apply_the_rules(program):
    terms = ["type 2 diabetes without complications", "type 1 diabetes without complications",
             "anemia in chronic kidney disease"]

    def script(call):
        if call.step == "analyse":
            return {"terms": terms}
        if call.step in ("locate", "verify"):
            field = "codes" if call.step == "locate" else "keep"
            return {field: call.allowed(field)}
        if call.step == "assign":
            enum = call.allowed("codes")
            assert {"D63.1", "E10.9", "E11.9"} <= set(enum)
            return {"codes": ["D63.1", "E10.9", "E11.9"]}
        return None

    engine = ScriptedEngine(script)
    with using(engine):
        pred = program(note="Type 1 and type 2 diabetes. Anemia in CKD.")
    locates = [c for c in engine.calls if c.step == "locate"]
    assert len(locates) == 3 and all(len(c.allowed("codes")) == 3 for c in locates)
    cand_lines = [c.user.split("candidates:\n", 1)[1] for c in locates]
    assert all(code in text for c, text in zip(locates, cand_lines) for code in c.allowed("codes"))
    groups = {c[:3] for c in pred.located}
    assert engine.count("verify") == len(groups) and engine.count("analyse") == engine.count("assign") == 1
    verify_text = "\n".join(c.user for c in engine.calls if c.step == "verify")
    assert "excludes1" in verify_text and "code first" in verify_text
    assert pred.assigned == ["D63.1", "E10.9", "E11.9"]
    assert pred.codes[0].startswith("N18") and pred.codes[1:] == ["D63.1", "E10.9"]  # etiology pulled first
    assert pred.excluded == ["E11.9"] and all(c in pred.located or c.startswith("N18") for c in pred.codes)
    assert pred.usage["calls"] == 1 + 3 + len(groups) + 1


def test_nothing_verified_means_no_assign_call(program):
    engine = ScriptedEngine(lambda call: {"terms": ["hypertension"]} if call.step == "analyse" else None)
    with using(engine):
        pred = program(note="BP high.")
    assert pred.codes == [] and engine.count("assign") == 0 and engine.count("locate") == 1


def test_index_is_cached_owner_only_and_reused(program, monkeypatch):
    index = program.index
    assert set(index.codes) == set(icd_index.billable_codes(SCOPE)) and "I10" in index.codes
    (hits,) = index.search(["essential hypertension"], k=2)
    assert hits[0].code == "I10"
    (entry,) = [p for p in os.scandir(index_dir()) if p.is_dir()]
    assert stat.S_IMODE(os.stat(entry.path).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(f.path).st_mode) == 0o600 for f in os.scandir(entry.path))
    monkeypatch.setattr(icd_index, "encode", lambda *a, **k: pytest.fail("rebuilt instead of loading the cache"))
    again = CodeIndex.build(SCOPE, index_dir())
    assert again.codes == index.codes


def test_synthetic_notes_and_loader(tmp_path):
    summary = synth_icd_notes(tmp_path / "d", n=40, seed=5)
    synth_icd_notes(tmp_path / "e", n=40, seed=5)
    splits = ("train", "dev", "test")
    assert [summary["files"][str(tmp_path / "d" / f"{s}.jsonl")] for s in splits] == [32, 4, 4]
    assert all((tmp_path / "d" / f"{s}.jsonl").read_bytes() == (tmp_path / "e" / f"{s}.jsonl").read_bytes()
               for s in splits)
    with pytest.raises(FileExistsError):
        synth_icd_notes(tmp_path / "d", n=3)
    notes = [x for s in splits for x in load_icd_notes(tmp_path / "d", s)]
    assert len(notes) == 40 and billable_only(SYNTH_CODES) == SYNTH_CODES
    for n in notes:
        assert n.targets and billable_only(n.targets) == n.targets
        assert resolve_excludes1(n.targets)[1] == []  # gold sets respect Excludes1
        assert pull_code_first(n.targets, []) == n.targets  # and code-first order
    assert any("D63.1" in n.targets for n in notes)


def test_metrics():
    golds = [["E11.9", "I10"], ["J18.9"], ["N18.30"]]
    preds = [["E11.9"], ["J18.9"], ["N18.4", "I10"]]
    m = icd_metrics(golds, preds, {"located": [["E11.9", "I10"], ["J18.9"], []]})
    assert m["micro_precision"] == pytest.approx(2 / 4) and m["micro_recall"] == pytest.approx(2 / 4)
    # codes with TP+FP+FN > 0: E11.9 (1), I10 (0), J18.9 (1), N18.30 (0), N18.4 (0)
    assert m["macro_f1"] == pytest.approx(2 / 5) and m["n_codes"] == 5
    assert m["exact_set_accuracy"] == pytest.approx(1 / 3) and m["recall_after_located"] == pytest.approx(3 / 4)
    import dspy

    exs = [dspy.Example(id=str(i), targets=g) for i, g in enumerate(golds)]
    recs = [{"id": "0", "codes": ["E119", "I10"], "located": ["E11.9", "I10"], "verified": ["E11.9", "I10"],
             "assigned": ["E11.9", "I10"]}]
    m = PROGRAM.metrics(exs, recs)
    assert m["micro_recall"] == pytest.approx(2 / 4) and m["micro_precision"] == 1.0 and m["n_answered"] == 1
    assert m["recall_after_assigned"] == pytest.approx(2 / 4)


def test_end_to_end_on_a_tiny_local_model(program, tmp_path):
    engine = tiny_engine()
    synth_icd_notes(tmp_path, n=1, seed=2)
    examples = PROGRAM.load(tmp_path, None)
    engine.ledger.reset()
    with using(engine, max_tokens=1500):
        pred = program(**examples[0].inputs())
    rec = PROGRAM.to_record(examples[0], pred)
    json.dumps(rec)
    assert set(pred.verified) <= set(pred.located) and set(pred.assigned) <= set(pred.verified)
    assert billable_only(pred.codes) == pred.codes and resolve_excludes1(pred.codes)[1] == []
    groups = len({c[:3] for c in pred.located})
    expected = 1 + len(pred.terms) + groups + (1 if pred.verified else 0)
    assert engine.ledger.total.calls == expected == pred.usage["calls"] and engine.ledger.total.errors == 0
    PROGRAM.metrics(examples, [rec])


@pytest.mark.slow
def test_end_to_end_against_a_vllm_server(program, tmp_path):
    engine = vllm_engine()
    synth_icd_notes(tmp_path / "n.jsonl", n=2, seed=7)
    examples = PROGRAM.load(tmp_path / "n.jsonl", None)
    with using(engine, max_tokens=512):
        preds = [program(**ex.inputs()) for ex in examples]
    expected = 0
    for pred in preds:
        assert set(pred.verified) <= set(pred.located) and set(pred.assigned) <= set(pred.verified)
        assert billable_only(pred.codes) == pred.codes and resolve_excludes1(pred.codes)[1] == []
        expected += 1 + len(pred.terms) + len({c[:3] for c in pred.located}) + (1 if pred.verified else 0)
        assert pred.usage["calls"] > 0
    assert engine.ledger.total.calls == expected == sum(p.usage["calls"] for p in preds)
    # the narrowed list-of-codes constraint, whatever the analysis found
    allowed = ["E11.9", "E10.9", "I10"]
    with using(engine, max_tokens=256):
        out = narrowed_call(program.locate, "codes", allowed, as_list=True, note=examples[0].note, term="diabetes",
                            candidates=[f"{c}: {tabular_notes(c).title}" for c in allowed])
    assert set(out.codes) <= set(allowed) and engine.ledger.total.errors == 0
