"""The evaluation runner: streaming, concurrency, failures, resume (incl. SIGKILL), permissions."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medprog.evaluation import (
    EvalRunError,
    evaluate,
    read_predictions,
)
from test_artifact import TOY, FakeEngine, build_tiny_model, write_toy_data

TESTS = Path(__file__).parent
ROOT = TESTS.parent


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_streams_predictions_metrics_report_owner_only(tmp_path: Path) -> None:
    examples = TOY.load(write_toy_data(tmp_path / "d.jsonl", 10), None)
    out = tmp_path / "run"
    res = evaluate(TOY, TOY.build(), examples, FakeEngine(), out, progress=False,
                   settings={"program": "toy", "lm": "fake"})
    assert res.metrics["accuracy"] == 1.0
    lines = _lines(out / "predictions.jsonl")
    assert [x["id"] for x in lines] == [e.id for e in examples]
    first = lines[0]
    assert first["record"]["urgency"] in ("low", "high") and first["score"] == 1.0 and first["error"] is None
    assert first["usage"]["total"]["calls"] == 1 and "Triage" in first["usage"]["steps"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == 1.0 and metrics["n"] == metrics["n_ok"] == 10 and metrics["n_failed"] == 0
    assert metrics["usage"]["total"]["calls"] == 10
    assert metrics["usage"]["steps"]["Triage"]["prompt_tokens"] > 0
    assert (out / "report.html").is_file()
    assert (out.stat().st_mode & 0o777) == 0o700
    for f in ("predictions.jsonl", "metrics.json", "report.html", "run.json"):
        assert ((out / f).stat().st_mode & 0o777) == 0o600, f


def test_failures_are_recorded_and_counted_not_fatal(tmp_path: Path) -> None:
    examples = TOY.load(write_toy_data(tmp_path / "d.jsonl", 9, fail_every=3), None)
    res = evaluate(TOY, TOY.build(), examples, FakeEngine(), tmp_path / "run", concurrency=3, progress=False)
    s = res.summary
    assert s["n_failed"] == 3 and s["n_ok"] == 6 and s["n_done"] == 9
    failed = [x for x in _lines(tmp_path / "run" / "predictions.jsonl") if x["error"]]
    assert len(failed) == 3 and all("simulated server error" in x["error"] for x in failed)
    assert all(x["score"] == 0.0 and x["record"] is None for x in failed)
    assert res.metrics["accuracy"] == pytest.approx(6 / 9)  # a failed example counts as no prediction


def test_concurrency_keeps_several_requests_in_flight(tmp_path: Path) -> None:
    examples = TOY.load(write_toy_data(tmp_path / "d.jsonl", 12), None)
    engine = FakeEngine(delay=0.05)
    evaluate(TOY, TOY.build(), examples, engine, None, concurrency=4, progress=False)
    assert engine.max_in_flight >= 2
    serial = FakeEngine(delay=0.0)
    evaluate(TOY, TOY.build(), examples, serial, None, concurrency=1, progress=False)
    assert serial.max_in_flight == 1


def test_engines_that_are_not_thread_safe_are_serialised(tmp_path: Path) -> None:
    from medprog.engines.runtime import engine_thread_safe

    class Local(FakeEngine):
        thread_safe = False

    examples = TOY.load(write_toy_data(tmp_path / "d.jsonl", 8), None)
    engine = Local(delay=0.02)
    assert not engine_thread_safe(engine)
    evaluate(TOY, TOY.build(), examples, engine, None, concurrency=4, progress=False)
    assert engine.max_in_flight == 1


def test_resume_skips_done_ids_and_drops_a_half_written_line(tmp_path: Path) -> None:
    examples = TOY.load(write_toy_data(tmp_path / "d.jsonl", 10), None)
    full = evaluate(TOY, TOY.build(), examples, FakeEngine(), tmp_path / "full", progress=False)
    out = tmp_path / "run"
    evaluate(TOY, TOY.build(), examples[:4], FakeEngine(), out, progress=False)
    with open(out / "predictions.jsonl", "a") as f:
        f.write('{"id": "n004", "record": {"urg')  # killed mid-write
    with pytest.raises(EvalRunError, match="already exists; pass --resume"):
        evaluate(TOY, TOY.build(), examples, FakeEngine(), out, progress=False)
    engine = FakeEngine()
    res = evaluate(TOY, TOY.build(), examples, engine, out, resume=True, progress=False)
    assert len(engine.seen) == 6  # only the unfinished examples ran
    ids = [x["id"] for x in read_predictions(out / "predictions.jsonl")]
    assert sorted(ids) == sorted(e.id for e in examples) and len(ids) == len(set(ids))
    assert res.metrics == full.metrics


def test_resume_refuses_a_different_run(tmp_path: Path) -> None:
    examples = TOY.load(write_toy_data(tmp_path / "d.jsonl", 3), None)
    out = tmp_path / "run"
    evaluate(TOY, TOY.build(), examples, FakeEngine(), out, progress=False, settings={"program": "a", "lm": "x"})
    with pytest.raises(EvalRunError, match="holds a run with lm='x'"):
        evaluate(TOY, TOY.build(), examples, FakeEngine(), out, resume=True, progress=False,
                 settings={"program": "a", "lm": "y"})


def test_retry_errors_reruns_only_failed_examples(tmp_path: Path) -> None:
    data = write_toy_data(tmp_path / "d.jsonl", 6, fail_every=3)
    out = tmp_path / "run"
    evaluate(TOY, TOY.build(), TOY.load(data, None), FakeEngine(), out, progress=False)
    fixed = [dict(json.loads(x), note=json.loads(x)["note"].replace(" FAIL", "")) for x in data.read_text().splitlines()]
    data.write_text("".join(json.dumps(r) + "\n" for r in fixed))
    engine = FakeEngine()
    res = evaluate(TOY, TOY.build(), TOY.load(data, None), engine, out, resume=True, retry_errors=True,
                   progress=False)
    assert len(engine.seen) == 2 and res.summary["n_failed"] == 0 and res.metrics["accuracy"] == 1.0


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    examples = TOY.load(write_toy_data(tmp_path / "d.jsonl", 3), None)
    examples[1]["id"] = examples[0]["id"]
    with pytest.raises(EvalRunError, match="occurs more than once"):
        evaluate(TOY, TOY.build(), examples, FakeEngine(), None, progress=False)


def test_extras_hook_gets_the_run_directory(tmp_path: Path) -> None:
    import dataclasses

    seen = {}

    def extras(out, examples, records, result):
        seen.update(out=out, n=len(records), acc=result["accuracy"])
        (out / "submission.json").write_text(json.dumps(records))

    info = dataclasses.replace(TOY, extras=extras) if "extras" in {f.name for f in dataclasses.fields(TOY)} else TOY
    if info is TOY:
        pytest.skip("ProgramInfo has no extras hook yet")
    examples = TOY.load(write_toy_data(tmp_path / "d.jsonl", 4), None)
    evaluate(info, info.build(), examples, FakeEngine(), tmp_path / "run", progress=False)
    assert seen == {"out": tmp_path / "run", "n": 4, "acc": 1.0}
    assert (tmp_path / "run" / "submission.json").is_file()


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_sigkill_half_way_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """A real ``medprog eval`` process with a tiny local model, killed with SIGKILL mid-run and resumed."""
    from medprog.engines.spec import make_engine

    model = build_tiny_model(tmp_path)
    n = 30
    data = write_toy_data(tmp_path / "d.jsonl", n)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "MEDPROG_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "medprog.cli", "eval", "test_artifact:TOY", "--data", str(data),
           "--lm", f"local:{model}", "--out", str(out), "--no-cache", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _count_lines(out / "predictions.jsonl") < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = read_predictions(out / "predictions.jsonl")
    assert 0 < len(done_before) < n, f"not killed half-way ({len(done_before)} of {n} done)"

    resumed = subprocess.run(cmd + ["--resume", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = read_predictions(out / "predictions.jsonl")
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == n  # nothing lost, nothing duplicated
    before = {r["id"]: r["record"] for r in done_before}
    assert all(r["record"] == before[r["id"]] for r in rows if r["id"] in before)

    engine = make_engine(f"local:{model}", cache_dir=False)
    examples = TOY.load(data, None)
    uninterrupted = evaluate(TOY, TOY.build(), examples, engine, tmp_path / "ref", progress=False)
    final = json.loads(resumed.stdout)
    assert {k: final[k] for k in uninterrupted.metrics} == uninterrupted.metrics
    assert final["n_done"] == n and final["n_failed"] == 0


def test_a_second_eval_into_a_run_being_written_is_refused(tmp_path: Path) -> None:
    examples = TOY.load(write_toy_data(tmp_path / "d.jsonl", 4), None)
    out = tmp_path / "run"
    evaluate(TOY, TOY.build(), examples[:2], FakeEngine(), out, progress=False)
    fd = os.open(out / "predictions.jsonl", os.O_WRONLY | os.O_APPEND)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another eval still writing this directory
    try:
        with pytest.raises(EvalRunError, match="being written by another medprog eval"):
            evaluate(TOY, TOY.build(), examples, FakeEngine(), out, resume=True, progress=False)
    finally:
        os.close(fd)
    res = evaluate(TOY, TOY.build(), examples, FakeEngine(), out, resume=True, progress=False)
    assert len(read_predictions(out / "predictions.jsonl")) == 4 and res.metrics
