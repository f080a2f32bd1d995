"""The `medprog` command line (typer).

Known failures (bad spec, missing model, unreachable server, malformed input) print one
clear line and exit with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

app = typer.Typer(help="medprog: typed, constrained prompt programs for clinical language tasks.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Datasets: synthetic generators.", no_args_is_help=True)
score_app = typer.Typer(help="Score prediction files with a task's official metric.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(score_app, name="score")
from medprog.cli_models import models_app  # noqa: E402

app.add_typer(models_app, name="models")
console = Console(stderr=True, soft_wrap=True)


class UsageError(Exception):
    """A user error the CLI reports in one line with exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from medprog.engines.base import EngineError
    from medprog.engines.local import ModelPathError
    from medprog.engines.spec import LMSpecError
    from medprog.programs.registry import UnknownProgramError

    errors: list[type[BaseException]] = [UsageError, LMSpecError, ModelPathError, UnknownProgramError, EngineError,
                                         FileNotFoundError, json.JSONDecodeError]
    for mod, name in [("medprog.engines.server", "ServerUnreachableError"), ("medprog.engines.server", "RemoteEndpointError"),
                      ("medprog.data.meddec", "MedDecFormatError"), ("medprog.data.medqa", "MedQAFormatError"),
                      ("medprog.artifact", "ArtifactError"),
                      ("medprog.evaluation", "EvalRunError"), ("medprog.optimizers", "UnknownOptimizerError"),
                      ("medprog.optimizers.base", "CompileError"),
                      ("medprog.engines.embedded", "EmbeddedModelError")]:
        try:
            errors.append(getattr(__import__(mod, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def cli_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known user errors into one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _user_errors() as e:
            msg = str(e) if not isinstance(e, KeyError) else str(e)
            console.print(f"[red]error:[/red] {msg}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def read_json_file(path: Path) -> Any:
    """Parse a JSON (or JSON Lines) input file; errors name the file and line."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if path.suffix == ".jsonl":
            rows = []
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as le:
                        raise UsageError(f"{path}:{n}: not valid JSON ({le.msg} at column {le.colno})") from None
            return rows
        raise UsageError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None


@app.command("programs")
def programs_cmd() -> None:
    """List the registered programs: name, task, metric."""
    from medprog.programs import available, get_program

    table = Table("program", "task", "metric")
    for name in available():
        info = get_program(name)
        table.add_row(info.name, info.task, info.metric)
    Console().print(table)


def build_lm(spec: str, *, cache_dir: Path | None = None, no_cache: bool = False, allow_remote: bool = False,
             concurrency: int | None = None):
    """An engine for ``spec`` that has been checked to answer (servers) or load (local models)."""
    from medprog.engines.spec import make_engine, parse_lm_spec

    s = parse_lm_spec(spec)
    options: dict[str, Any] = {}
    if s.kind == "openai":
        options["allow_remote"] = allow_remote
        if concurrency:
            options["concurrency"] = concurrency
    engine = make_engine(s, cache_dir=False if no_cache else cache_dir, **options)
    if hasattr(engine, "check"):
        engine.check()
    return engine


@app.command("run")
@cli_errors
def run_cmd(
    program: str = typer.Argument(..., help="A registered program name or a compiled artifact directory."),
    input: Path = typer.Option(..., "--input", help="JSON file with the program's inputs (one object)."),
    lm: str = typer.Option(None, "--lm", help="local:PATH | local:smollm2 | openai:MODEL@URL | vllm:PATH (an artifact's own model if omitted)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow an openai: endpoint off this machine's network."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the request cache."),
    max_tokens: int = typer.Option(1024, "--max-tokens"),
    option: list[str] = typer.Option(None, "--option", "-o", help="Program build setting KEY=VALUE, e.g. -o mode=basic (repeatable)."),
) -> None:
    """Run one program on one input and print its typed output as JSON."""
    import dspy

    from medprog.signatures.adapter import MedprogAdapter

    inputs = read_json_file(input)
    if not isinstance(inputs, dict):
        raise UsageError(f"{input}: expected one JSON object with the program's inputs")
    module, engine = load_runnable(program, lm, option, allow_remote=allow_remote, no_cache=no_cache)
    with dspy.context(lm=engine.as_lm(max_tokens=max_tokens, temperature=0.0), adapter=MedprogAdapter()):
        prediction = module(**inputs)
    out = {k: _jsonable(v) for k, v in dict(prediction).items()}
    out["_usage"] = engine.ledger.snapshot()
    print(json.dumps(out, indent=2, ensure_ascii=False))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def build_program(info: Any, option: list[str] | None) -> Any:
    """A fresh program: its registered defaults, overridden by ``-o KEY=VALUE`` build settings."""
    import inspect

    settings = dict(_parse_option(o) for o in option or [])
    params = inspect.signature(info.build).parameters.values()
    valid = sorted(set(info.defaults) | {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)})
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise UsageError(f"-o {', '.join(unknown)}: not a setting of {info.name}; valid: {', '.join(valid) or 'none'}")
    try:
        return info.build(**{**info.defaults, **settings})
    except (ValueError, TypeError) as e:
        raise UsageError(f"{info.name} settings: {e}") from None


def load_runnable(program: str, lm: str | None, option: list[str] | None = None, **engine_opts: Any):
    """(module, engine) for a program name (with ``-o`` build settings) or an artifact directory."""
    path = Path(program)
    if path.is_dir() and (path / "program.json").is_file():
        from medprog.artifact import load_artifact

        if option:
            raise UsageError(f"{path}: an artifact's settings are fixed when it is compiled; -o applies to programs by name")
        art = load_artifact(path)
        spec = lm or art.default_lm
        if spec is None:
            raise UsageError(f"{path}: the artifact has no model of its own; pass --lm")
        return art.module, build_lm(spec, **engine_opts)
    from medprog.programs import get_program

    if lm is None:
        raise UsageError("--lm is required when running a program by name (e.g. --lm local:art/tagger/model)")
    info = get_program(program)
    return build_program(info, option), build_lm(lm, **engine_opts)


# ---------------------------------------------------------------------------------------
# compile, eval, compare


def describe_destination(spec: str) -> str:
    """Where a model spec sends text (for the run log; never the text itself)."""
    from medprog.engines.spec import parse_lm_spec

    s = parse_lm_spec(spec)
    if s.kind in ("local", "vllm"):
        return f"in-process model {s.target} (text stays on this machine)"
    try:
        from urllib.parse import urlsplit

        from medprog.engines.server import is_local_host

        where = [f"{u} ({'loopback/private' if is_local_host(urlsplit(u).hostname or '') else 'REMOTE'})"
                 for u in s.urls]
    except ImportError:  # pragma: no cover - server engine not installed
        where = list(s.urls)
    return f"OpenAI-compatible server(s) for model {s.target!r}: {', '.join(where)}"


def _log(msg: str) -> None:
    console.print(f"[dim]medprog:[/dim] {msg}", highlight=False)


def _quiet_library_logs(verbose: bool) -> None:
    """At default verbosity, library loggers that may echo examples (patient text) stay quiet."""
    import logging

    if verbose:
        return
    for name in ("dspy", "gepa", "optuna", "httpx", "LiteLLM"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:  # pragma: no cover
        pass


def _default_split(data: Path, split: str | None, fallback: str) -> str | None:
    """A split name for directory data (MedDec layout): the given one, else ``fallback`` if that split exists."""
    if split is not None or not data.is_dir():
        return split
    return fallback if (data / "splits" / f"{fallback}.txt").is_file() else None


def _parse_option(text: str) -> tuple[str, Any]:
    key, eq, raw = text.partition("=")
    if not eq or not key.strip():
        raise UsageError(f"--option {text!r}: expected KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value


COMPILE_KEYS = {"program", "train", "dev", "split_train", "split_dev", "optimizer", "lm", "teacher", "out",
                "budget_calls", "budget_tokens", "seed", "base", "members", "allow_remote", "no_cache",
                "max_tokens", "threads", "verbose", "options", "settings"}


def read_config(path: Path) -> dict[str, Any]:
    """A compile config (TOML): the command-line names as keys (``-`` or ``_``), plus an ``[options]`` table."""
    import tomllib

    if not path.is_file():
        raise UsageError(f"{path}: no such config file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML ({e})") from None
    out = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(out) - COMPILE_KEYS)
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {unknown}; known: {sorted(COMPILE_KEYS)}")
    for table in ("options", "settings"):
        if table in out and not isinstance(out[table], dict):
            raise UsageError(f"{path}: {table!r} must be a table ([{table}])")
    return out


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


@app.command("compile")
@cli_errors
def compile_cmd(
    args: list[str] = typer.Argument(None, metavar="PROGRAM", help="A registered program (or module:ATTR)."),
    train: Path = typer.Option(None, "--train", help="Training data: a file, or a directory with splits (uses 'train')."),
    dev: Path = typer.Option(None, "--dev", help="Dev data (default: the --train directory's 'val' split)."),
    split_train: str = typer.Option(None, "--split-train", help="Split of --train to use (default train)."),
    split_dev: str = typer.Option(None, "--split-dev", help="Split of --dev to use (default val)."),
    optimizer: str = typer.Option(None, "--optimizer", help="bootstrap | random-search | mipro | gepa | dft | grpo | pseudolabel | ensemble"),
    lm: str = typer.Option(None, "--lm", help="The student model: local:PATH | openai:MODEL@URL | vllm:PATH."),
    teacher: str = typer.Option(None, "--teacher", help="Teacher / prompt / reflection model (default: --lm)."),
    out: Path = typer.Option(None, "--out", help="Artifact directory to write."),
    config: Path = typer.Option(None, "--config", help="TOML file with any of these options; the command line wins."),
    budget_calls: int = typer.Option(None, "--budget-calls", help="Stop after this many model calls, keeping the best so far."),
    budget_tokens: int = typer.Option(None, "--budget-tokens", help="Stop after this many tokens, keeping the best so far."),
    seed: int = typer.Option(None, "--seed"),
    base: str = typer.Option(None, "--base", help="Starting point: a model directory, an artifact, or an embedded model (smollm2)."),
    members: list[Path] = typer.Option(None, "--members", help="Eval output directories to ensemble (ensemble optimizer)."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Optimizer option KEY=VALUE (repeatable)."),
    allow_remote: bool = typer.Option(None, "--allow-remote", help="Allow an openai: endpoint off this machine's network."),
    no_cache: bool = typer.Option(None, "--no-cache", help="Do not read or write the request cache."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Completion token limit per call (default 1024)."),
    threads: int = typer.Option(None, "--threads", help="Concurrent examples inside the optimizer."),
    verbose: bool = typer.Option(None, "--verbose", help="Let library logs through (they may echo examples)."),
    json_out: bool = typer.Option(False, "--json", help="Print the compile report as JSON on stdout."),
) -> None:
    """Compile a program against data with an optimizer; write an artifact directory."""
    from medprog.programs.registry import resolve_program
    from medprog.optimizers import get_optimizer
    from medprog.optimizers.base import CompileRequest

    args = list(args or [])
    cli: dict[str, Any] = dict(program=args[0] if args else None, train=train, dev=dev, split_train=split_train,
                               split_dev=split_dev, optimizer=optimizer, lm=lm, teacher=teacher, out=out,
                               budget_calls=budget_calls, budget_tokens=budget_tokens, seed=seed, base=base,
                               members=list(members or []) + [Path(a) for a in args[1:]] or None,
                               allow_remote=allow_remote, no_cache=no_cache, max_tokens=max_tokens, threads=threads,
                               verbose=verbose)
    if args[1:] and not members:
        raise UsageError(f"unexpected argument(s) {args[1:]}; only --members takes several values")
    cfg = read_config(config) if config else {}
    merged = {**cfg, **{k: v for k, v in cli.items() if v is not None}}
    options = dict(cfg.get("options") or {})
    options.update(dict(_parse_option(o) for o in option or []))
    for key in ("program", "optimizer", "out"):
        if not merged.get(key):
            raise UsageError(f"missing {key if key == 'program' else '--' + key} (on the command line or in --config)")
    _quiet_library_logs(bool(merged.get("verbose")))
    info = resolve_program(str(merged["program"]))
    name = str(merged["optimizer"])
    fn = get_optimizer(name)

    def load(path: Any, split: str | None) -> list[Any]:
        return list(info.load(Path(path), split))

    train_path = Path(merged["train"]) if merged.get("train") else None
    train_split = _default_split(train_path, merged.get("split_train"), "train") if train_path else None
    train_examples = load(train_path, train_split) if train_path else []
    dev_path = Path(merged["dev"]) if merged.get("dev") else None
    if dev_path is None and train_path is not None and train_path.is_dir():
        dev_split = _default_split(train_path, merged.get("split_dev"), "val")
        dev_path = train_path if dev_split is not None else None
    else:
        dev_split = _default_split(dev_path, merged.get("split_dev"), "val") if dev_path else None
    dev_examples = load(dev_path, dev_split) if dev_path else []
    from medprog.optimizers.config import run_settings, split_options

    run_opts, request_opts, options = split_options(options)  # -o keys of the run, of the program, the optimizer's
    flags = {k: merged.get(k) for k in ("allow_remote", "no_cache", "max_tokens", "threads")}
    settings = {**(merged.get("settings") or {}), **(request_opts.get("settings") or {})}
    req = CompileRequest(program=info, train=train_examples, dev=dev_examples, lm=merged.get("lm"),
                         teacher=merged.get("teacher"), out=Path(merged["out"]),
                         budget_calls=merged.get("budget_calls"), budget_tokens=merged.get("budget_tokens"),
                         seed=int(merged.get("seed") or 0), options=options,
                         run=run_settings({"progress": True, **run_opts, **flags}), settings=settings or None,
                         base=str(merged["base"]) if merged.get("base") else None,
                         members=[Path(m) for m in merged.get("members") or []])
    for who, spec in (("student", req.lm), ("teacher", req.teacher)):
        if spec:
            _log(f"{who} text goes to {describe_destination(spec)}")
    _log(f"compiling {info.name} with {name}: {len(train_examples)} train"
         + (f" ({train_split})" if train_split else "") + f", {len(dev_examples)} dev"
         + (f" ({dev_split})" if dev_split else ""))
    from medprog.optimizers.base import CompileError

    import contextlib

    try:
        with contextlib.redirect_stdout(sys.stderr):  # optimizers print progress; stdout is for --json
            path = fn(req)
    except CompileError as e:
        raise UsageError(str(e)) from None
    report_path = Path(path) / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    if json_out:
        _print_json({"artifact": str(path), **report})
        return
    _log(f"artifact written to {path}")
    _print_summary(report)


def _print_summary(report: dict[str, Any]) -> None:
    dev = report.get("dev") or {}
    table = Table("metric", "value", title=f"{report.get('eval_set', 'dev')} metrics")
    for k, v in (dev.get("metrics") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)
    comp = report.get("compile") or {}
    total = (comp.get("usage") or {}).get("total") or {}
    if total:
        Console().print(f"compile: {total.get('calls', 0)} calls ({total.get('cache_hits', 0)} cached), "
                        f"{total.get('prompt_tokens', 0)} prompt + {total.get('completion_tokens', 0)} completion "
                        f"tokens, {comp.get('wall_s', 0):.1f} s" + (f"; stopped early: {comp['stopped_early']}"
                                                                    if comp.get("stopped_early") else ""))


def _usage_table(usage: dict[str, Any], title: str) -> Table:
    cols = ["calls", "cache_hits", "prompt_tokens", "completion_tokens", "errors", "wall_s"]
    table = Table("step", *cols, title=title)
    rows = list((usage.get("steps") or {}).items()) + ([("total", usage["total"])] if usage.get("total") else [])
    for name, u in rows:
        table.add_row(name, *[f"{u.get(c, 0):.2f}" if c == "wall_s" else str(u.get(c, 0)) for c in cols])
    return table


@app.command("eval")
@cli_errors
def eval_cmd(
    program: str = typer.Argument(..., help="A registered program name (or module:ATTR) or an artifact directory."),
    data: Path = typer.Option(..., "--data", help="Evaluation data: a file, or a directory with splits."),
    split: str | None = typer.Option(None, "--split", help="Split of a data directory (default: test, when it exists)."),
    lm: str = typer.Option(None, "--lm", help="local:PATH | local:smollm2 | openai:MODEL@URL | vllm:PATH (an artifact's own model if omitted)."),
    out: Path = typer.Option(..., "--out", help="Run directory: predictions.jsonl, metrics.json, report.html."),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="Examples in flight at once."),
    resume: bool = typer.Option(False, "--resume", help="Skip examples already in OUT/predictions.jsonl."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="With --resume, run failed examples again."),
    limit: int = typer.Option(None, "--limit", min=1, help="Only the first N examples."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow an openai: endpoint off this machine's network."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the request cache."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Completion token limit per call."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", help="Let library logs through (they may echo examples)."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json on stdout."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Program build setting KEY=VALUE, e.g. -o mode=basic (repeatable)."),
) -> None:
    """Evaluate a program or artifact with its task's metric; stream predictions, resume, report."""
    from medprog.artifact import is_artifact, load_artifact
    from medprog.programs.registry import resolve_program
    from medprog.evaluation import EvalRunError, evaluate

    _quiet_library_logs(verbose)
    lm_kwargs: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    if is_artifact(program):
        if option:
            raise UsageError(f"{program}: an artifact's settings are fixed when it is compiled; -o applies to programs by name")
        art = load_artifact(program)
        info, module = art.info, art.module
        spec = lm or art.default_lm
        if spec is None:
            raise UsageError(f"{program}: the artifact has no model of its own; pass --lm")
        lm_kwargs.update(art.engine_settings)
        settings.update(program=str(Path(program).resolve()), artifact_hash=art.hash)
    else:
        if Path(program).is_dir():
            raise UsageError(f"{program}: a directory without program.json is not an artifact")
        info = resolve_program(program)
        module = build_program(info, option)
        spec = lm
        if spec is None:
            raise UsageError("--lm is required when evaluating a program by name (e.g. --lm local:art/tagger/weights)")
        settings.update(program=program, build=dict(_parse_option(o) for o in option or []))
    if max_tokens:
        lm_kwargs["max_tokens"] = max_tokens
    split = _default_split(data, split, "test")
    examples = list(info.load(data, split))
    if limit:
        examples = examples[:limit]
    settings.update(lm=spec, data=str(data.resolve()), split=split, sent_to=describe_destination(spec))
    _log(f"text goes to {describe_destination(spec)}")
    engine = build_lm(spec, no_cache=no_cache, allow_remote=allow_remote, concurrency=concurrency)
    _log(f"evaluating {info.name} on {len(examples)} examples" + (f" ({split})" if split else "")
         + f", concurrency {concurrency}, writing {out}")
    try:
        result = evaluate(info, module, examples, engine, out, concurrency=concurrency, resume=resume,
                          settings=settings, lm_kwargs=lm_kwargs, progress=not no_progress,
                          retry_errors=retry_errors)
    except EvalRunError as e:
        raise UsageError(str(e)) from None
    finally:
        engine.close()
    if json_out:
        _print_json(result.summary)
        return
    s = result.summary
    table = Table("metric", "value", title=f"{info.name}: {s['n_done']}/{s['n']} done, {s['n_failed']} failed")
    for k, v in result.metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)
    Console().print(_usage_table(s["usage"], "cost"))
    _log(f"wrote {', '.join(str(f) for f in result.files)}")


@app.command("compare")
@cli_errors
def compare_cmd(
    run_a: Path = typer.Argument(..., help="Baseline run directory (medprog eval --out)."),
    run_b: Path = typer.Argument(..., help="Run to compare against it."),
    n_boot: int = typer.Option(10000, "--n-boot", min=100, help="Bootstrap resamples."),
    confidence: float = typer.Option(0.95, "--confidence", min=0.5, max=0.999),
    seed: int = typer.Option(0, "--seed"),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Metric differences B − A, with a paired bootstrap CI over the examples both runs finished."""
    from medprog.compare import compare_runs
    from medprog.evaluation import EvalRunError

    try:
        c = compare_runs(run_a, run_b, n_boot=n_boot, confidence=confidence, seed=seed)
    except EvalRunError as e:
        raise UsageError(str(e)) from None
    if json_out:
        _print_json(c.to_dict())
        return
    table = Table("metric", "A", "B", "B − A", title=f"{run_b} vs {run_a}")

    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.4f}"

    for k, row in c.metrics.items():
        table.add_row(k, f(row["a"]), f(row["b"]), f(row["diff"]))
    Console().print(table)
    if c.n_shared:
        pct = int(round(c.confidence * 100))
        Console().print(f"per-example score over {c.n_shared} shared examples: A {c.mean_a:.4f}, B {c.mean_b:.4f}, "
                        f"B − A {c.diff:+.4f} ({pct}% paired bootstrap CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}], "
                        f"P(B ≤ A) ≈ {c.p_b_not_better:.3f}, {c.n_boot} resamples)")
    else:
        Console().print("no shared examples with scores: no confidence interval")
    if c.only_a or c.only_b:
        Console().print(f"only in A: {c.only_a} examples; only in B: {c.only_b}")


SYNTHESIZERS = {
    "meddec": "medprog.data.synth_meddec:synth_meddec",
    "meddec-ood": "medprog.data.synth_meddec_ood:synth_meddec_ood",
    "medqa": "medprog.data.medqa:synth_medqa",
    "hospital": "medprog.data.hospital:synth_hospital",
    "icd": "medprog.data.icd_notes:synth_icd_notes",
    "registry": "medprog.data.synth_registry:synth_registry",
}
"""``medprog data synth NAME``: generator functions ``fn(out, n, seed) -> summary``."""


@data_app.command("synth")
@cli_errors
def synth_cmd(
    name: str = typer.Argument(..., help="Dataset: " + ", ".join(SYNTHESIZERS)),
    out: Path = typer.Option(..., "--out", help="Directory to write (must be empty or absent)."),
    n: int = typer.Option(500, "--n", help="Number of examples."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same files)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset directory."),
) -> None:
    """Write a seeded synthetic dataset in the task's official on-disk format."""
    import importlib

    if name not in SYNTHESIZERS:
        raise UsageError(f"unknown dataset {name!r}; known: {', '.join(SYNTHESIZERS)}")
    module, _, attr = SYNTHESIZERS[name].partition(":")
    fn = getattr(importlib.import_module(module), attr)
    kwargs = {"overwrite": True} if overwrite else {}
    try:
        summary = fn(out, n=n, seed=seed, **kwargs)
    except FileExistsError as e:
        raise UsageError(f"{e} (pass --overwrite to replace it)") from None
    _print_json(summary if summary is not None else {"out": str(out)})


@score_app.command("meddec")
@cli_errors
def score_meddec_cmd(
    gold: Path = typer.Option(..., "--gold", help="MedDec directory (data/, raw_text/, stats.csv, splits/)."),
    pred: Path = typer.Option(..., "--pred", help="Submission JSON: [{file_name, predictions: [{start_offset, end_offset, category}]}]."),
    split: str = typer.Option(None, "--split", help="Score only this split's notes."),
    out: Path = typer.Option(None, "--out", help="Also write metrics.json here (a directory)."),
) -> None:
    """Official-equivalent MedDec metrics: span F1, token F1, worst subgroup, overall."""
    from medprog.programs.tagger_outputs import score_submission

    metrics = score_submission(gold, pred, split)
    if out is not None:
        from medprog.engines.cache import private_dir

        (private_dir(out) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _print_json(metrics)


@app.command("baseline")
@cli_errors
def baseline_cmd(
    task: str = typer.Argument("meddec", help="Task (meddec)."),
    data: Path = typer.Option(..., "--data", help="MedDec directory."),
    split: str = typer.Option("test", "--split", help="Split to score."),
    train_split: str = typer.Option("train", "--train-split", help="Split the keyword lexicon is learned from."),
    train_data: Path = typer.Option(None, "--train-data",
                                    help="MedDec directory holding --train-split (default: --data), e.g. the "
                                         "training set when --data is an evaluation-only set such as meddec-ood."),
) -> None:
    """Score the no-tag and keyword-rule baselines, to read beside a trained tagger."""
    if task != "meddec":
        raise UsageError(f"no baselines for {task!r}; known: meddec")
    from medprog.data.meddec import load_meddec
    from medprog.metrics.meddec import score
    from medprog.programs.tagger_baselines import keyword_baseline, no_tag_baseline

    notes = load_meddec(data, split)
    try:
        train_notes = load_meddec(train_data or data, train_split)
    except FileNotFoundError as e:
        raise UsageError(f"{e}; the keyword rule needs training notes: pass --train-data DIR "
                         "(e.g. the training set when --data is evaluation-only)") from None
    keyword = keyword_baseline(train_notes)
    _log(f"keyword rule learned from {train_data or data} split {train_split!r} ({len(train_notes)} notes)")
    table = Table("baseline", "span F1", "token F1", "worst", "overall")
    for name, preds in (("no-tag", no_tag_baseline(notes)), ("keyword", keyword(notes))):
        m = score(notes, preds)
        table.add_row(name, *(f"{m[k]:.4f}" for k in ("span_f1", "token_f1", "worst", "overall")))
    Console().print(table)


@app.command("ensemble-apply")
@cli_errors
def ensemble_apply_cmd(
    artifact: Path = typer.Argument(..., help="An artifact written by `compile tagger --optimizer ensemble`."),
    members: list[Path] = typer.Argument(..., help="The members' eval output directories on the new data."),
    out: Path = typer.Option(..., "--out", help="Submission JSON to write."),
    gold: Path = typer.Option(None, "--gold", help="MedDec directory to score against (optional)."),
    split: str = typer.Option(None, "--split", help="Split of --gold to score."),
) -> None:
    """Combine tagger outputs with a tuned Span-Cluster Consensus ensemble."""
    from medprog.optimizers.ensemble_compile import apply_ensemble

    try:
        apply_ensemble(artifact, members, out)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if gold is not None:
        from medprog.programs.tagger_outputs import score_submission

        m = score_submission(gold, out, split)
        _print_json({k: m[k] for k in ("span_f1", "token_f1", "base", "worst", "overall")})
    else:
        _log(f"wrote {out}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
