"""The evaluation runner: concurrent, streaming to disk, resumable.

`evaluate` runs a program over examples with ``concurrency`` requests in flight. Each
finished example is appended at once to ``DIR/predictions.jsonl`` as one JSON line
(flushed and fsynced) holding its id, the program's record, its per-example score, its
error if it failed, and its own usage (calls, tokens, cache hits, wall time per step).
``resume=True`` skips ids already in the file (a half-written last line from a killed
run is dropped). A failing example — an engine error after retries, a constraint
violation, an unparsable reply — is recorded and counted, never fatal. At the end
``DIR/metrics.json`` (the program's official metrics plus counts and usage) and
``DIR/report.html`` are written, and the program's ``extras`` hook, if any, runs.
"""

from __future__ import annotations

import contextvars
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medprog.data.rows import jsonl_rows
from medprog.engines.accounting import Usage, usage_scope
from medprog.engines.base import DEFAULT_MAX_TOKENS
from medprog.engines.runtime import GuardedEngine

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
REPORT = "report.html"
RUN = "run.json"


class EvalRunError(ValueError):
    """An evaluation that cannot start as asked (an existing run directory, a mismatched resume)."""


DEFAULT_LM_KWARGS: dict[str, Any] = {"temperature": 0.0, "max_tokens": DEFAULT_MAX_TOKENS}


# ---------------------------------------------------------------------------------------
# predictions file


def _recorded_errors() -> tuple[type[BaseException], ...]:
    from dspy.utils.exceptions import AdapterParseError

    from medprog.engines.base import EngineError
    from medprog.engines.constraints import ConstraintViolation

    return (EngineError, ConstraintViolation, AdapterParseError, TimeoutError, ConnectionError)


def recorded_error(exc: BaseException) -> BaseException | None:
    """The failure to record for an example (the engine's own error, unwrapped from dspy's), or None
    when ``exc`` is not an example failure (a bug: it propagates)."""
    from dspy.utils.exceptions import LMProviderError, LMTransportError

    kinds = _recorded_errors()
    chain: BaseException | None = exc
    seen: set[int] = set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, kinds):
            return chain
        chain = chain.__cause__ or chain.__context__
    return exc if isinstance(exc, (LMProviderError, LMTransportError)) else None


def read_predictions(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Lines of a predictions file; a half-written last line is ignored (and cut off with ``repair``)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    rows = []
    lines = data[:end].decode("utf-8").splitlines()
    for where, _, row in jsonl_rows(lines, path, EvalRunError, "; the file was edited or corrupted"):
        if not isinstance(row, dict) or "id" not in row:
            raise EvalRunError(f"{where}: not a prediction line (no \"id\")")
        rows.append(row)
    return rows


def latest_by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last line per example id (a retried example supersedes its failed attempt)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out[str(row["id"])] = row
    return out


class _Appender:
    """Append JSON lines durably: write, flush, fsync, one line at a time."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:  # one writer per run directory: a second eval into it would interleave its rows
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EvalRunError(f"{path} is being written by another medprog eval; wait for it or choose "
                               "a new --out") from None
        self.f = os.fdopen(fd, "a", encoding="utf-8")
        self.lock = threading.Lock()

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False, default=_json_default) + "\n"
        with self.lock:
            self.f.write(line)
            self.f.flush()
            os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# the runner


@dataclass
class EvalResult:
    """What an evaluation produced (also on disk when it had a directory)."""

    metrics: dict[str, Any]
    summary: dict[str, Any]
    lines: list[dict[str, Any]]
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)


def example_id(example: Any, index: int) -> str:
    value = example.get("id") if hasattr(example, "get") else getattr(example, "id", None)
    return str(value) if value is not None else str(index)


def run_one(info: Any, module: Any, example: Any, ex_id: str, lm: Any) -> dict[str, Any]:
    """Run and score one example; recorded errors become an ``error`` line, others propagate."""
    import dspy

    from medprog.signatures.adapter import MedprogAdapter

    t0 = time.perf_counter()
    row: dict[str, Any] = {"id": ex_id}
    with usage_scope() as ledger:
        try:
            with dspy.context(lm=lm, adapter=MedprogAdapter()):
                prediction = module(**example.inputs())
            row["record"] = info.to_record(example, prediction)
            row["score"] = float(info.score(example, prediction))
            row["error"] = None
        except Exception as e:
            cause = recorded_error(e)
            if cause is None:
                raise
            row.update(record=None, score=0.0, error=f"{type(cause).__name__}: {cause}")
    row["usage"] = ledger.snapshot()
    row["wall_s"] = round(time.perf_counter() - t0, 4)
    return row


def _aggregate_usage(rows: list[dict[str, Any]]) -> dict[str, Any]:
    steps: dict[str, Usage] = {}
    for row in rows:
        for name, u in ((row.get("usage") or {}).get("steps") or {}).items():
            steps.setdefault(name, Usage()).add(Usage(**{k: v for k, v in u.items() if k in Usage.model_fields}))
    total = Usage()
    for u in steps.values():
        total.add(u)
    return {"total": total.model_dump(), "steps": {k: v.model_dump() for k, v in steps.items()}}


def summarize(info: Any, examples: list[Any], rows_by_id: dict[str, dict[str, Any]],
              *, settings: dict[str, Any] | None = None, wall_s: float | None = None) -> tuple[dict, dict, list]:
    """(program metrics, metrics.json body, the lines in example order) for finished examples."""
    ids = [example_id(ex, i) for i, ex in enumerate(examples)]
    lines = [rows_by_id[i] for i in ids if i in rows_by_id]
    records = [r["record"] for r in lines if r.get("error") is None and r.get("record") is not None]
    metrics = info.metrics(examples, records) if examples else {}
    scores = [float(r.get("score") or 0.0) for r in lines]
    summary = {
        **metrics,
        "n": len(examples),
        "n_done": len(lines),
        "n_ok": len(records),
        "n_failed": sum(r.get("error") is not None for r in lines),
        "mean_score": (sum(scores) / len(scores)) if scores else None,
        "usage": _aggregate_usage(lines),
        "wall_s": round(wall_s, 3) if wall_s is not None else None,
        "run": settings or {},
    }
    return metrics, summary, lines


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("score {task.fields[score]}"), TextColumn("{task.fields[rate]}"),
        TextColumn("failed {task.fields[failed]}"), TimeRemainingColumn(),
        console=Console(stderr=True), disable=not enabled, transient=False,
    )


def _unique_ids(examples: list[Any]) -> list[str]:
    """The examples' ids, refusing data where one id occurs twice (resume keys on them)."""
    ids = [example_id(ex, i) for i, ex in enumerate(examples)]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise EvalRunError(f"example id {dup!r} occurs more than once in the data")
    return ids


def _open_run(out: Path, settings: dict[str, Any], resume: bool,
              retry_errors: bool) -> tuple[_Appender, dict[str, dict[str, Any]]]:
    """Open ``out`` for appending; on ``resume`` check its settings and return the rows already done."""
    from medprog.engines.cache import private_dir

    private_dir(out)
    pred_path = out / PREDICTIONS
    run_path = out / RUN
    if pred_path.exists() and pred_path.stat().st_size > 0 and not resume:
        raise EvalRunError(f"{pred_path} already exists; pass --resume to continue that run or choose a new --out")
    if resume and run_path.is_file():
        before = json.loads(run_path.read_text(encoding="utf-8"))
        keys = ("program", "build", "artifact_hash", "lm", "data", "split")
        diff = [k for k in keys if k in before and k in settings and before[k] != settings[k]]
        if diff:
            k = diff[0]
            raise EvalRunError(f"{out} holds a run with {k}={before[k]!r}, not {settings[k]!r}; "
                               "resume with the same settings or choose a new --out")
    appender = _Appender(pred_path)  # the lock comes before reading, so no one else writes meanwhile
    done: dict[str, dict[str, Any]] = {}
    if resume:
        done = latest_by_id(read_predictions(pred_path, repair=True))
        if retry_errors:
            done = {k: v for k, v in done.items() if v.get("error") is None}
    _write_json(run_path, {**settings, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return appender, done


class _Tally:
    """Running score, failure count and rate shown on the progress bar."""

    def __init__(self, finished: list[dict[str, Any]]) -> None:
        self.t_start = time.perf_counter()
        self.scores = [float(r.get("score") or 0.0) for r in finished]
        self.failed = sum(r.get("error") is not None for r in finished)
        self.n_new = 0

    def add(self, row: dict[str, Any]) -> None:
        self.n_new += 1
        self.scores.append(float(row.get("score") or 0.0))
        self.failed += row.get("error") is not None

    def fields(self) -> dict[str, str]:
        elapsed = time.perf_counter() - self.t_start
        rate = f"{self.n_new / elapsed:.2f} ex/s" if self.n_new and elapsed > 0 else "– ex/s"
        score = f"{sum(self.scores) / len(self.scores):.3f}" if self.scores else "–"
        return {"score": score, "rate": rate, "failed": str(self.failed)}


def _run_all(info: Any, module: Any, todo: list[tuple[Any, str]], lm: Any, *, total: int, concurrency: int,
             progress: bool, appender: _Appender | None, done: dict[str, dict[str, Any]], tally: _Tally) -> None:
    """Run ``todo`` on a thread pool, writing each row as it finishes, in submission order per batch."""
    with _progress(progress) as bar:
        task = bar.add_task(getattr(info, "name", "eval"), total=total, completed=total - len(todo),
                            **tally.fields())
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="medprog-eval") as pool:
            order = {pool.submit(contextvars.copy_context().run, run_one, info, module, ex, i, lm): k
                     for k, (ex, i) in enumerate(todo)}
            pending = set(order)
            try:
                while pending:
                    complete, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in sorted(complete, key=order.__getitem__):
                        row = fut.result()
                        if appender is not None:
                            appender.write(row)
                        done[row["id"]] = row
                        tally.add(row)
                        bar.update(task, advance=1, **tally.fields())
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise


def _write_outputs(info: Any, out: Path, examples: list[Any], lines: list[dict[str, Any]],
                   metrics: dict[str, Any], summary: dict[str, Any], report: bool) -> list[Path]:
    """Write metrics, the program's extra files and the HTML report into ``out``; return the files."""
    _write_json(out / METRICS, summary)
    files = [out / PREDICTIONS, out / METRICS]
    ok = [r["record"] for r in lines if r.get("error") is None and r.get("record") is not None]
    extras = getattr(info, "extras", None)
    if extras is not None:
        extras(out, examples, ok, metrics)
    if report:
        from medprog.report import write_report

        notes_hook = getattr(info, "report_notes", None)
        write_report(out / REPORT, summary=summary, lines=lines, title=f"medprog eval: {getattr(info, 'name', '')}",
                     notes=notes_hook(examples, ok) if notes_hook is not None else None)
        files.append(out / REPORT)
    return files


def evaluate(info: Any, module: Any, examples: list[Any], engine: Any, out_dir: str | Path | None, *,
             concurrency: int = 1, resume: bool = False, settings: dict[str, Any] | None = None,
             lm_kwargs: dict[str, Any] | None = None, progress: bool = True, retry_errors: bool = False,
             report: bool = True, before_call: Callable[[], None] | None = None) -> EvalResult:
    """Evaluate ``module`` on ``examples`` with ``engine``; stream to ``out_dir`` (None: in memory only).

    ``settings`` describes the run (program, lm spec, data) and is checked on ``resume``:
    a directory written by a different program, model or dataset is refused.
    """
    ids = _unique_ids(examples)
    settings = dict(settings or {})
    out = Path(out_dir) if out_dir is not None else None
    done: dict[str, dict[str, Any]] = {}
    appender = None
    if out is not None:
        appender, done = _open_run(out, settings, resume, retry_errors)

    lm = GuardedEngine(engine, before_call=before_call).as_lm(**{**DEFAULT_LM_KWARGS, **(lm_kwargs or {})})
    todo = [(ex, i) for ex, i in zip(examples, ids) if i not in done]
    wanted = set(ids)
    tally = _Tally([r for i, r in done.items() if i in wanted])
    try:
        _run_all(info, module, todo, lm, total=len(examples), concurrency=concurrency, progress=progress,
                 appender=appender, done=done, tally=tally)
    finally:
        if appender is not None:
            appender.close()

    wall = time.perf_counter() - tally.t_start
    metrics, summary, lines = summarize(info, examples, done, settings=settings, wall_s=wall)
    files = _write_outputs(info, out, examples, lines, metrics, summary, report) if out is not None else []
    return EvalResult(metrics=metrics, summary=summary, lines=lines, out_dir=out, files=files)
