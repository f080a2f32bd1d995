"""`medprog compile`, `medprog eval`, `medprog compare` from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medprog.cli import app
from test_artifact import TOY, FakeEngine, write_toy_data

runner = CliRunner()
PROG = "test_artifact:TOY"


def invoke(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def err(result: Any) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(result.stderr.split())


@pytest.fixture()
def fake_engines(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every engine the CLI or an optimizer opens is a fake; the specs asked for are recorded."""
    opened: dict[str, Any] = {"specs": [], "engines": []}

    def make(spec: str, *args: Any, **kwargs: Any) -> FakeEngine:
        engine = FakeEngine(wrong="wrong" in spec)
        opened["specs"].append(spec)
        opened["engines"].append(engine)
        return engine

    monkeypatch.setattr("medprog.cli_common.build_lm", make)
    monkeypatch.setattr("medprog.optimizers.base.open_engine", make)
    return opened


@pytest.fixture()
def data(tmp_path: Path) -> dict[str, Path]:
    return {"train": write_toy_data(tmp_path / "train.jsonl", 8, seed=0),
            "dev": write_toy_data(tmp_path / "dev.jsonl", 6, seed=1),
            "test": write_toy_data(tmp_path / "test.jsonl", 10, seed=2)}


def test_compile_config_file_with_command_line_winning(tmp_path: Path, data, fake_engines) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'program = "{PROG}"\ntrain = "{data["train"]}"\ndev = "{data["dev"]}"\n'
                   f'optimizer = "random-search"\nlm = "local:/models/student"\nout = "{tmp_path / "from-config"}"\n'
                   'budget-calls = 500\nseed = 3\n[options]\nmax_bootstrapped_demos = 1\nmax_labeled_demos = 1\n')
    r = invoke("compile", "--config", cfg, "--optimizer", "bootstrap", "--out", tmp_path / "art", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)  # stdout holds only the JSON (optimizer chatter goes to stderr)
    assert report["artifact"] == str(tmp_path / "art") and report["optimizer"] == "bootstrap"
    assert report["seed"] == 3 and report["compile"]["budget"]["calls"] == 500
    assert report["options"]["max_bootstrapped_demos"] == 1
    assert not (tmp_path / "from-config").exists()
    assert "text goes to in-process model /models/student" in err(r)
    body = json.loads((tmp_path / "art" / "program.json").read_text())
    assert body["default_lm"] == "local:/models/student"
    assert len(body["steps"]["classify"]["demos"]) == 1


def test_compile_directory_data_uses_train_and_val_splits(tmp_path: Path, monkeypatch, fake_engines) -> None:
    d = tmp_path / "meddec-like"
    (d / "splits").mkdir(parents=True)
    for split, n in (("train", 6), ("val", 4)):
        write_toy_data(d / f"{split}.jsonl", n, seed=n)
        (d / "splits" / f"{split}.txt").write_text("")
    seen = {}

    def fake_optimizer(req):
        seen["req"] = req
        req.out.mkdir(parents=True)
        return req.out

    monkeypatch.setattr("medprog.optimizers.get_optimizer", lambda name: fake_optimizer)
    r = invoke("compile", PROG, "--train", d, "--optimizer", "ensemble", "--members", tmp_path / "m1",
               tmp_path / "m2", tmp_path / "m3", "--out", tmp_path / "art", "-o", "num_candidates=3",
               "-o", "auto=light")
    assert r.exit_code == 0, r.output
    req = seen["req"]
    assert (len(req.train), len(req.dev)) == (6, 4)
    assert req.members == [tmp_path / "m1", tmp_path / "m2", tmp_path / "m3"]
    assert req.options["num_candidates"] == 3 and req.options["auto"] == "light"
    r = invoke("compile", PROG, "extra", "--optimizer", "bootstrap", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "only --members takes several values" in err(r)


def test_eval_artifact_resume_and_compare(tmp_path: Path, data, fake_engines) -> None:
    r = invoke("compile", PROG, "--train", data["train"], "--dev", data["dev"], "--optimizer", "bootstrap",
               "--lm", "local:/models/good", "--out", tmp_path / "art")
    assert r.exit_code == 0, r.output
    run_a = tmp_path / "run-a"
    r = invoke("eval", tmp_path / "art", "--data", data["test"], "--out", run_a, "--concurrency", 3, "--json")
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.stdout)
    assert metrics["accuracy"] == 1.0 and metrics["n_done"] == 10
    assert fake_engines["specs"][-1] == "local:/models/good"  # the artifact's own model
    assert metrics["usage"]["total"]["calls"] == 10 and metrics["run"]["artifact_hash"].startswith("sha256:")
    assert {p.name for p in run_a.iterdir()} >= {"predictions.jsonl", "metrics.json", "report.html", "run.json"}
    # prompts and outputs never reach the log
    assert "year-old" not in err(r)

    r = invoke("eval", tmp_path / "art", "--data", data["test"], "--out", run_a)
    assert r.exit_code == 2 and "pass --resume" in err(r)
    r = invoke("eval", tmp_path / "art", "--data", data["test"], "--out", run_a, "--resume", "--json")
    assert r.exit_code == 0 and fake_engines["engines"][-1].seen == []
    assert json.loads(r.stdout)["accuracy"] == 1.0

    run_b = tmp_path / "run-b"
    r = invoke("eval", PROG, "--data", data["test"], "--lm", "local:/models/wrong", "--out", run_b, "--limit", 8)
    assert r.exit_code == 0, r.output
    r = invoke("compare", run_a, run_b, "--json", "--n-boot", 500)
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)
    assert c["n_shared"] == 8 and c["only_a"] == 2 and c["only_b"] == 0
    assert c["diff"] == -1.0 and c["ci_low"] == c["ci_high"] == -1.0 and c["p_b_not_better"] == 1.0
    assert c["metrics"]["accuracy"] == {"a": 1.0, "b": 0.0, "diff": -1.0}
    r = invoke("compare", run_a, run_b)
    assert r.exit_code == 0 and "paired bootstrap CI" in r.stdout


def test_cli_errors_are_one_line_exit_2(tmp_path: Path, data, fake_engines) -> None:
    r = invoke("compile", PROG, "--train", data["train"], "--optimizer", "nope", "--out", tmp_path / "a")
    assert r.exit_code == 2 and "unknown optimizer 'nope'" in err(r)
    r = invoke("compile", PROG, "--train", data["train"], "--optimizer", "bootstrap")
    assert r.exit_code == 2 and "missing --out" in err(r)
    r = invoke("compile", PROG, "--train", data["train"], "--optimizer", "bootstrap", "--out", tmp_path / "a")
    assert r.exit_code == 2 and "--lm is required" in err(r)
    r = invoke("eval", PROG, "--data", data["test"], "--out", tmp_path / "r")
    assert r.exit_code == 2 and "--lm is required" in err(r)
    r = invoke("eval", "no-such-program", "--data", data["test"], "--lm", "local:x", "--out", tmp_path / "r")
    assert r.exit_code == 2 and "unknown program" in err(r)
    bad = tmp_path / "bad.toml"
    bad.write_text("optimiser = 'bootstrap'\n")
    r = invoke("compile", "--config", bad)
    assert r.exit_code == 2 and "unknown key(s) ['optimiser']" in err(r)
    r = invoke("compare", tmp_path / "nothing", tmp_path / "nothing")
    assert r.exit_code == 2 and "no predictions.jsonl" in err(r)


def test_tampered_artifact_is_refused_by_eval(tmp_path: Path, data, fake_engines) -> None:
    invoke("compile", PROG, "--train", data["train"], "--optimizer", "bootstrap", "--lm", "local:/m",
           "--out", tmp_path / "art")
    p = tmp_path / "art" / "program.json"
    p.write_text(p.read_text().replace("Classify how urgent", "Always say high; classify how urgent"))
    r = invoke("eval", tmp_path / "art", "--data", data["test"], "--out", tmp_path / "r")
    assert r.exit_code == 2 and "program.json: content hash mismatch" in err(r)


def test_remote_endpoint_needs_allow_remote(tmp_path: Path, data) -> None:
    pytest.importorskip("medprog.engines.server")
    r = invoke("eval", PROG, "--data", data["test"], "--lm", "openai:m@https://8.8.8.8/v1", "--out", tmp_path / "r")
    assert r.exit_code == 2 and "--allow-remote" in err(r)
    assert "REMOTE" in err(r)  # the log says where text would have gone


def test_compile_then_eval_on_a_tiny_local_model(tmp_path: Path, data, tiny_model_dir) -> None:
    """The real path: compile with the local engine, eval the artifact with its own model; same metrics."""
    r = invoke("compile", PROG, "--train", data["train"], "--dev", data["dev"], "--optimizer", "bootstrap",
               "--lm", f"local:{tiny_model_dir}", "--out", tmp_path / "art", "--no-cache",
               "-o", "max_bootstrapped_demos=1", "-o", "max_labeled_demos=1", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    r = invoke("eval", tmp_path / "art", "--data", data["dev"], "--out", tmp_path / "run", "--no-cache",
               "--concurrency", 2, "--json")
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.stdout)
    assert {k: metrics[k] for k in report["dev"]["metrics"]} == report["dev"]["metrics"]
    import medprog

    prog = medprog.load(tmp_path / "art")
    assert prog(note="vomiting blood").urgency in ("low", "high")


@pytest.mark.slow
def test_tagger_compile_and_eval_with_official_outputs(tmp_path: Path, tiny_model_dir) -> None:
    """tagger on synthetic MedDec: compile (labeled demos) → eval the artifact → same metrics, official files."""
    pytest.importorskip("medprog.programs.tagger")
    from medprog.data.synth_meddec import synth_meddec

    data = tmp_path / "meddec"
    synth_meddec(data, 20, 0)
    r = invoke("compile", "tagger", "--train", data, "--optimizer", "bootstrap", "--lm", f"local:{tiny_model_dir}",
               "--out", tmp_path / "art", "--no-cache", "-o", "max_bootstrapped_demos=0",
               "-o", "max_labeled_demos=1", "-o", "dev_limit=1", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["eval_set"] == "dev" and report["n_dev"] >= 1 and report["dev"]["n"] == 1  # the directory's val split
    demo = json.loads((tmp_path / "art" / "program.json").read_text())["steps"]["tag"]["demos"][0]
    assert set(demo) == {"note", "tagged"}  # only the signature's fields are stored
    run = tmp_path / "run"
    r = invoke("eval", tmp_path / "art", "--data", data, "--split", "val", "--limit", 1, "--out", run, "--no-cache",
               "--json")
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.stdout)
    assert {k: metrics[k] for k in report["dev"]["metrics"]} == report["dev"]["metrics"]
    assert {"span_f1", "token_f1", "overall"} <= set(metrics)
    assert (run / "predictions.json").is_file() and (run / "per_category.png").is_file()  # the tagger's extras
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2
    assert "Notes: gold beside predicted (1 of 1)" in page and "Worst group: " in page  # the tagger's notes
