"""bootstrap and mipro on letter-only creason: demos reach the narrowed choice call, mipro's search runs
under the choice constraint; the benchmark's train/val draw never touches dev and its options parse."""

from __future__ import annotations

import importlib
import json
import sys
from argparse import Namespace
from pathlib import Path

import dspy
import pytest
from programs_fixtures import ScriptedEngine

from medprog.artifact import load_artifact
from medprog.cli_common import parse_option
from medprog.data.patient_registry import build_tasks, load_registry, write_tasks
from medprog.data.synth_registry import synth_registry
from medprog.engines.constraints import ChoiceConstraint
from medprog.evaluation import evaluate
from medprog.optimizers import get_optimizer
from medprog.optimizers.base import CompileRequest, absolute_spec
from medprog.optimizers.config import parse_options, run_settings, split_options
from medprog.optimizers.prompt_config import BootstrapConfig, MIPROConfig
from medprog.programs.creason import PROGRAM

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    """Outcome questions (two options) and masked-variable questions (five options)."""
    d = tmp_path_factory.mktemp("creason")
    synth_registry(d / "reg", n=60, seed=3)
    t = build_tasks(load_registry(d / "reg"), seed=3)
    two = [x for x in t if len(x.options) == 2][:6]
    five = [x for x in t if len(x.options) == 5 and x.answer in "CDE"][:6]
    assert len(two) == 6 and len(five) == 6
    return write_tasks(five + two, d / "tasks.jsonl")


def gold_answerer(examples: list[dspy.Example]) -> ScriptedEngine:
    """Answers every question with its gold letter (found by the record and options in the last message)."""
    gold = {(e.record, json.dumps(e.options)): e.answer for e in examples}

    def script(call):
        if not isinstance(call.constraint, ChoiceConstraint):
            return {"proposed_instruction": "Read the record; answer with the letter of the right option."}
        last = call.messages[-1]["content"]
        return next((a for (rec, opts), a in gold.items() if rec in last and opts in last), None)

    return ScriptedEngine(script)


def compile_creason(name: str, examples: list[dspy.Example], out: Path, lm: str = "local:unused",
                    **options) -> tuple[Path, ScriptedEngine]:
    """Train on the five-option tasks, validate on the two-option ones, every answer gold."""
    engine = gold_answerer(examples)
    req = CompileRequest(program=PROGRAM, train=examples[:6], dev=examples[6:], lm=lm, teacher=None,
                         out=out, engine=engine, settings={"cot": False}, options=options)
    return get_optimizer(name)(req), engine


def test_bootstrap_demos_reach_the_narrowed_letter_call(tasks, tmp_path):
    examples = PROGRAM.load(tasks, None)
    path, _ = compile_creason("bootstrap", examples, tmp_path / "art", max_bootstrapped_demos=3, max_labeled_demos=3)
    demos = json.loads((path / "program.json").read_text())["steps"]["reason"]["demos"]
    assert len(demos) == 3 and all(d.get("augmented") for d in demos)
    assert {d["answer"] for d in demos} <= set("CDE")  # trained on five-option tasks answered C-E
    art = load_artifact(path)
    engine = gold_answerer(examples)
    five, two = examples[0], examples[-1]
    result = evaluate(art.info, art.module, [five, two], engine, None, progress=False)
    assert result.metrics["accuracy"] == 1.0
    by_options = {len(c.constraint.choices): c for c in engine.calls}
    # five options: the demos ride along as user/assistant turns; two options (A/B): none fits, none is sent
    assert len(by_options[5].messages) == 1 + 2 * 3 + 1
    assert [m["content"] for m in by_options[5].messages if m["role"] == "assistant"] == [d["answer"] for d in demos]
    assert len(by_options[2].messages) == 2 and by_options[2].constraint.choices == ["A", "B"]


def test_mipro_searches_letter_only_creason(tasks, tmp_path):
    examples = PROGRAM.load(tasks, None)
    path, engine = compile_creason("mipro", examples, tmp_path / "art", num_candidates=3, num_trials=2,
                                   max_bootstrapped_demos=2, max_labeled_demos=2, view_data_batch_size=4,
                                   data_aware_proposer=False)
    report = json.loads((path / "report.json").read_text())
    assert report["compile"]["notes"]["failed_proposals"] == []
    proposed = report["compile"]["notes"]["proposed_instructions"]
    assert proposed == ["Read the record; answer with the letter of the right option."] * 3  # what the model wrote
    assert len(report["compile"]["candidates"]) == 3  # the default program, then two trials
    assert "GenerateSingleModuleInstruction" in report["compile"]["usage"]["steps"]
    assert json.loads((path / "program.json").read_text())["settings"] == {"cot": False}
    answers = [c for c in engine.calls if isinstance(c.constraint, ChoiceConstraint)]
    assert answers and all(set(c.constraint.choices) <= set("ABCDE") for c in answers)


def test_artifact_compiled_on_an_embedded_model_keeps_its_name(tasks, tmp_path, monkeypatch):
    # `compile --lm local:smollm2` once saved local:<cwd>/smollm2, so `medprog eval ARTIFACT` failed
    monkeypatch.chdir(tmp_path)
    examples = PROGRAM.load(tasks, None)
    path, _ = compile_creason("bootstrap", examples, tmp_path / "art", lm="local:smollm2", max_bootstrapped_demos=1)
    assert json.loads((path / "program.json").read_text())["default_lm"] == "local:smollm2"
    assert load_artifact(path).default_lm == "local:smollm2"
    assert absolute_spec("local:smollm2") == "local:smollm2" and absolute_spec("vllm:smollm2") == "vllm:smollm2"
    assert absolute_spec("local:models/student") == f"local:{tmp_path / 'models' / 'student'}"


def bench():
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("creason_prompt_optimizers")
    finally:
        sys.path.remove(str(BENCH))


def test_benchmark_split_is_seeded_disjoint_and_from_train_only(tmp_path):
    m = bench()
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"id": f"t{i}"}) + "\n" for i in range(30)))
    runs = []
    for k in range(2):
        a = Namespace(data=data, out=tmp_path / f"out{k}", train_n=10, val_n=5, seed=7)
        m.make_split(a)
        runs.append([[json.loads(x)["id"] for x in (a.out / f).read_text().splitlines()] for f in ("train.jsonl",
                                                                                              "val.jsonl")])
    (train, val), again = runs
    assert len(train) == 10 and len(val) == 5 and not set(train) & set(val) and runs[0] == again
    assert train != [f"t{i}" for i in range(10)]  # drawn, not the file's head
    with pytest.raises(SystemExit):
        m.make_split(Namespace(data=data, out=tmp_path / "big", train_n=25, val_n=6, seed=0))


@pytest.mark.parametrize("arm, config", [("bootstrap", BootstrapConfig), ("mipro", MIPROConfig)])
def test_benchmark_compile_options_parse(arm, config, tmp_path):
    m = bench()
    a = Namespace(demos=2, report_limit=8, mipro_candidates=3, mipro_trials=4, view_data_batch_size=10,
                  prompt_max_tokens=256, model="smollm2", out=tmp_path, seed=0, concurrency=4, threads=1)
    args = m.compile_args(arm, a)
    assert args[:4] == ["compile", "creason", "--optimizer", arm] and "local:smollm2" in args
    run, request, rest = split_options(dict(parse_option(args[i + 1]) for i, x in enumerate(args) if x == "-o"))
    assert request["settings"] == {"cot": False} and run_settings(run).dev_limit == 8
    cfg = parse_options(config, rest, optimizer=arm)
    assert cfg.max_bootstrapped_demos == 2 and cfg.max_labeled_demos == 2
    if arm == "mipro":
        assert cfg.explicit and (cfg.num_candidates, cfg.num_trials, cfg.prompt_max_tokens) == (3, 4, 256)
