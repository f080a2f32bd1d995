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
console = Console(stderr=True)


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
                      ("medprog.data.meddec", "MedDecFormatError"), ("medprog.artifact", "ArtifactError")]:
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
    lm: str = typer.Option(None, "--lm", help="local:PATH | openai:MODEL@URL | vllm:PATH (an artifact's own model if omitted)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow an openai: endpoint off this machine's network."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the request cache."),
    max_tokens: int = typer.Option(1024, "--max-tokens"),
) -> None:
    """Run one program on one input and print its typed output as JSON."""
    import dspy

    from medprog.signatures.adapter import MedprogAdapter

    inputs = read_json_file(input)
    if not isinstance(inputs, dict):
        raise UsageError(f"{input}: expected one JSON object with the program's inputs")
    module, engine = load_runnable(program, lm, allow_remote=allow_remote, no_cache=no_cache)
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


def load_runnable(program: str, lm: str | None, **engine_opts: Any):
    """(module, engine) for a program name or an artifact directory."""
    path = Path(program)
    if path.is_dir() and (path / "program.json").is_file():
        from medprog.artifact import load_artifact

        art = load_artifact(path)
        spec = lm or art.default_lm
        if spec is None:
            raise UsageError(f"{path}: the artifact has no model of its own; pass --lm")
        return art.module, build_lm(spec, **engine_opts)
    from medprog.programs import get_program

    if lm is None:
        raise UsageError("--lm is required when running a program by name (e.g. --lm local:art/tagger/model)")
    info = get_program(program)
    return info.build(**info.defaults), build_lm(lm, **engine_opts)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
