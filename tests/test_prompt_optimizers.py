"""Prompt optimizers compile end to end on a tiny local model; artifacts round-trip; budgets stop cleanly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medprog.artifact import load_artifact
from medprog.evaluation import evaluate
from medprog.optimizers import OPTIMIZERS, UnknownOptimizerError, get_optimizer
from medprog.optimizers.base import Budget, BudgetExhausted, CompileError, CompileRequest
from test_artifact import TOY, FakeEngine, write_toy_data


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> tuple[list, list]:
    d = tmp_path_factory.mktemp("toy")
    return TOY.load(write_toy_data(d / "train.jsonl", 8, seed=0), None), TOY.load(write_toy_data(d / "dev.jsonl", 6, seed=1), None)


def _compile(name: str, engine: Any, data: tuple[list, list], out: Path, teacher_engine: Any = None,
             **kw: Any) -> tuple[Path, dict[str, Any]]:
    train, dev = data
    req = CompileRequest(program=TOY, train=train, dev=dev, lm="local:unused", teacher=None, out=out,
                         engine=engine, teacher_engine=teacher_engine, **kw)
    path = get_optimizer(name)(req)
    return path, json.loads((path / "report.json").read_text())


def _assert_round_trip(path: Path, report: dict[str, Any], engine: Any, dev: list) -> None:
    """compile → load → eval gives the metrics the in-memory program had."""
    art = load_artifact(path)
    again = evaluate(art.info, art.module, dev, engine, None, progress=False, lm_kwargs=art.engine_settings)
    assert again.metrics == report["dev"]["metrics"]


def test_registry_names_and_lazy_errors() -> None:
    assert {"bootstrap", "random-search", "mipro", "gepa", "dft", "grpo", "pseudolabel", "ensemble"} == set(OPTIMIZERS)
    with pytest.raises(UnknownOptimizerError, match="unknown optimizer 'nope'"):
        get_optimizer("nope")
    assert callable(get_optimizer("bootstrap"))


def test_bootstrap_on_tiny_model_round_trips(tiny_engine, toy_data, tmp_path: Path) -> None:
    path, report = _compile("bootstrap", tiny_engine, toy_data, tmp_path / "art",
                            options={"max_bootstrapped_demos": 2, "max_labeled_demos": 2})
    body = json.loads((path / "program.json").read_text())
    assert 1 <= len(body["steps"]["classify"]["demos"]) <= 2
    assert report["optimizer"] == "bootstrap" and report["dev"]["n"] == 6
    assert report["compile"]["usage"]["total"]["calls"] >= 1
    assert "Triage" in report["compile"]["usage"]["steps"]
    assert report["dev"]["usage"]["total"]["calls"] == 6 and report["dev"]["wall_s"] > 0
    _assert_round_trip(path, report, tiny_engine, toy_data[1])


def test_random_search_on_tiny_model_round_trips(tiny_engine, toy_data, tmp_path: Path) -> None:
    path, report = _compile("random-search", tiny_engine, toy_data, tmp_path / "art",
                            options={"num_candidates": 1, "max_bootstrapped_demos": 2, "max_labeled_demos": 2})
    scored = [c for c in report["compile"]["candidates"] if c["n"] == 6]
    assert len(scored) == 4  # zero-shot, labeled, unshuffled bootstrap, one random bootstrap
    _assert_round_trip(path, report, tiny_engine, toy_data[1])


def test_mipro_on_tiny_model_round_trips(tiny_engine, toy_data, tmp_path: Path) -> None:
    """The tiny random model is also the prompt model: its proposals may fail; the compile goes on."""
    path, report = _compile("mipro", tiny_engine, toy_data, tmp_path / "art", options={
        "num_candidates": 2, "num_trials": 2, "max_bootstrapped_demos": 1, "max_labeled_demos": 1,
        "program_aware_proposer": False, "data_aware_proposer": False, "fewshot_aware_proposer": False,
        "prompt_max_tokens": 48})
    assert report["optimizer"] == "mipro"
    assert "failed_proposals" in report["compile"]["notes"]
    assert any(c["source"] == "evaluate" for c in report["compile"]["candidates"])
    _assert_round_trip(path, report, tiny_engine, toy_data[1])


def test_mipro_proposals_become_instructions(toy_data, tmp_path: Path) -> None:
    engine = FakeEngine()
    path, report = _compile("mipro", engine, toy_data, tmp_path / "art", options={
        "num_candidates": 3, "num_trials": 3, "max_bootstrapped_demos": 1, "max_labeled_demos": 1})
    assert report["compile"]["notes"]["failed_proposals"] == []
    assert report["dev"]["metrics"]["accuracy"] == 1.0
    prop = report["compile"]["usage"]["steps"]
    assert sum(u["calls"] for k, u in prop.items() if k != "Triage") >= 1  # the proposer's own calls
    _assert_round_trip(path, report, engine, toy_data[1])


def test_call_budget_stops_cleanly_and_keeps_the_best_so_far(toy_data, tmp_path: Path) -> None:
    engine = FakeEngine()
    path, report = _compile("random-search", engine, toy_data, tmp_path / "art", budget_calls=9,
                            options={"num_candidates": 3})
    comp = report["compile"]
    assert comp["budget"]["exhausted"] and comp["budget"]["calls_used"] == 9
    assert comp["usage"]["total"]["calls"] == 9  # the call that would pass the budget never reached the engine
    assert comp["stopped_early"] == "call budget of 9 spent"
    assert [c["n"] for c in comp["candidates"]] == [6]  # zero-shot finished; the next candidate did not
    assert report["dev"]["metrics"]["accuracy"] == 1.0  # the best so far was kept and evaluated
    _assert_round_trip(path, report, engine, toy_data[1])


def test_bootstrap_budget_keeps_the_demos_it_has(toy_data, tmp_path: Path) -> None:
    path, report = _compile("bootstrap", FakeEngine(), toy_data, tmp_path / "art", budget_calls=2,
                            options={"max_bootstrapped_demos": 4, "max_labeled_demos": 4})
    demos = json.loads((path / "program.json").read_text())["steps"]["classify"]["demos"]
    assert sum(bool(d.get("augmented")) for d in demos) == 2
    assert report["compile"]["budget"]["exhausted"]


def test_token_budget(toy_data, tmp_path: Path) -> None:
    _, report = _compile("random-search", FakeEngine(), toy_data, tmp_path / "art", budget_tokens=50,
                         options={"num_candidates": 2})
    b = report["compile"]["budget"]
    assert b["exhausted"] and b["reason"].startswith("token budget of 50 spent")
    assert b["tokens_used"] >= 50


def test_budget_exhausted_passes_through_except_exception() -> None:
    b = Budget(calls=1)
    b.reserve_call()
    with pytest.raises(BudgetExhausted):
        try:
            b.reserve_call()
        except Exception:  # noqa: BLE001 - what dspy's optimizers do per example
            pytest.fail("BudgetExhausted must not be an Exception")
    with pytest.raises(CompileError):
        Budget(calls=0)


def test_compile_needs_train_data(toy_data, tmp_path: Path) -> None:
    req = CompileRequest(program=TOY, train=[], dev=toy_data[1], lm="local:x", teacher=None, out=tmp_path / "a",
                         engine=FakeEngine())
    with pytest.raises(CompileError, match="needs training examples"):
        get_optimizer("bootstrap")(req)


def test_gepa_with_fake_reflection(toy_data, tmp_path: Path) -> None:
    """GEPA end to end (fake engine as student and reflection LM; a real run is in the notes)."""
    engine = FakeEngine(wrong=True)
    path, report = _compile("gepa", engine, toy_data, tmp_path / "art", teacher_engine=FakeEngine(),
                            options={"max_metric_calls": 20, "reflection_minibatch_size": 2})
    assert report["optimizer"] == "gepa"
    steps = report["compile"]["usage"]["steps"]
    assert steps.get("proposal", {}).get("calls", 0) >= 1  # reflection went through the constrained adapter
    assert set(steps) == {"Triage", "proposal"}  # rewritten signatures still count under their step
    assert any(c["source"] == "gepa" for c in report["compile"]["candidates"])
    _assert_round_trip(path, report, engine, toy_data[1])
