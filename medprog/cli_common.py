"""What the `medprog` commands share: one-line user errors (exit 2), input parsing, engines from
specs, the program-or-artifact resolution, logging, printing, and the option types used by
several commands (each written once)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True, soft_wrap=True)

LmOption = Annotated[
    str | None,
    typer.Option(
        "--lm", help="local:PATH | local:smollm2 | openai:MODEL@URL | vllm:PATH (an artifact's own model if omitted)."
    ),
]
AllowRemoteOption = Annotated[
    bool, typer.Option("--allow-remote", help="Allow an openai: endpoint off this machine's network.")
]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the request cache.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", help="Let library logs through (they may echo examples).")]
TorchThreadsOption = Annotated[
    int | None,
    typer.Option("--torch-threads", min=1, help=(
        "Torch threads of a local: model (default: $MEDPROG_TORCH_THREADS, else the CPUs idle at start)."))
]
BuildOption = Annotated[
    list[str] | None,
    typer.Option("--option", "-o", help="Program build setting KEY=VALUE, e.g. -o mode=basic (repeatable)."),
]


class UsageError(Exception):
    """A user error the CLI reports in one line with exit code 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    from medprog.engines.base import EngineError
    from medprog.engines.local import ModelPathError
    from medprog.engines.spec import LMSpecError
    from medprog.programs.registry import UnknownProgramError

    errors: list[type[BaseException]] = [
        UsageError,
        LMSpecError,
        ModelPathError,
        UnknownProgramError,
        EngineError,
        FileNotFoundError,
        json.JSONDecodeError,
    ]
    for mod, name in [
        ("medprog.engines.server", "ServerUnreachableError"),
        ("medprog.engines.server", "RemoteEndpointError"),
        ("medprog.data.meddec", "MedDecFormatError"),
        ("medprog.data.medqa", "MedQAFormatError"),
        ("medprog.artifact", "ArtifactError"),
        ("medprog.evaluation", "EvalRunError"),
        ("medprog.optimizers", "UnknownOptimizerError"),
        ("medprog.optimizers.base", "CompileError"),
        ("medprog.engines.embedded", "EmbeddedModelError"),
    ]:
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
        except user_errors() as e:
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


def set_threads_for(specs: list[str | None], torch_threads: int | None) -> None:
    """Set torch's thread count once, before a ``local:`` model loads (engines never set it themselves).

    On a shared 2-core machine the local engine ran about 20x slower on 2 threads than on 1, so the
    default is the CPUs idle now (`medprog.engines.threads.torch_threads`)."""
    from medprog.engines.spec import parse_lm_spec
    from medprog.engines.threads import set_torch_threads

    if any(s and parse_lm_spec(s).kind == "local" for s in specs):
        try:
            set_torch_threads(torch_threads)
        except ValueError as e:
            raise UsageError(str(e) if torch_threads is None else f"--torch-threads: {e}") from None


def build_lm(
    spec: str,
    *,
    cache_dir: Path | None = None,
    no_cache: bool = False,
    allow_remote: bool = False,
    concurrency: int | None = None,
):
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


def jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def build_program(info: Any, option: list[str] | None) -> Any:
    """A fresh program: its registered defaults, overridden by ``-o KEY=VALUE`` build settings."""
    import inspect

    settings = dict(parse_option(o) for o in option or [])
    params = inspect.signature(info.build).parameters.values()
    valid = sorted(set(info.defaults) | {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)})
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise UsageError(f"-o {', '.join(unknown)}: not a setting of {info.name}; valid: {', '.join(valid) or 'none'}")
    try:
        return info.build(**{**info.defaults, **settings})
    except (ValueError, TypeError) as e:
        raise UsageError(f"{info.name} settings: {e}") from None


def describe_destination(spec: str) -> str:
    """Where a model spec sends text (for the run log; never the text itself)."""
    from medprog.engines.spec import parse_lm_spec

    s = parse_lm_spec(spec)
    if s.kind in ("local", "vllm"):
        return f"in-process model {s.target} (text stays on this machine)"
    try:
        from urllib.parse import urlsplit

        from medprog.engines.server import is_local_host

        where = [
            f"{u} ({'loopback/private' if is_local_host(urlsplit(u).hostname or '') else 'REMOTE'})" for u in s.urls
        ]
    except ImportError:  # pragma: no cover - server engine not installed
        where = list(s.urls)
    return f"OpenAI-compatible server(s) for model {s.target!r}: {', '.join(where)}"


def log(msg: str) -> None:
    console.print(f"[dim]medprog:[/dim] {msg}", highlight=False)


def quiet_library_logs(verbose: bool) -> None:
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


def default_split(data: Path, split: str | None, fallback: str) -> str | None:
    """A split name for directory data (MedDec layout): the given one, else ``fallback`` if that split exists."""
    if split is not None or not data.is_dir():
        return split
    return fallback if (data / "splits" / f"{fallback}.txt").is_file() else None


def parse_option(text: str) -> tuple[str, Any]:
    key, eq, raw = text.partition("=")
    if not eq or not key.strip():
        raise UsageError(f"--option {text!r}: expected KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def usage_table(usage: dict[str, Any], title: str) -> Table:
    cols = ["calls", "cache_hits", "prompt_tokens", "completion_tokens", "errors", "wall_s"]
    table = Table("step", *cols, title=title)
    rows = list((usage.get("steps") or {}).items()) + ([("total", usage["total"])] if usage.get("total") else [])
    for name, u in rows:
        table.add_row(name, *[f"{u.get(c, 0):.2f}" if c == "wall_s" else str(u.get(c, 0)) for c in cols])
    return table


@dataclass
class Runnable:
    """A program ready to run: its registry entry, its module, the model spec, and what a run records."""

    info: Any
    module: Any
    spec: str
    lm_kwargs: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def resolve_runnable(
    program: str, lm: str | None, option: list[str] | None, *, doing: str, example_lm: str
) -> Runnable:
    """A compiled artifact directory (its module, engine settings and own model unless ``lm`` is
    given) or a registered program (``name`` or ``module:ATTR``) built with ``-o`` settings."""
    from medprog.artifact import is_artifact, load_artifact
    from medprog.programs.registry import resolve_program

    if is_artifact(program):
        if option:
            raise UsageError(
                f"{program}: an artifact's settings are fixed when it is compiled; -o applies to programs by name"
            )
        art = load_artifact(program)
        spec = lm or art.default_lm
        if spec is None:
            raise UsageError(f"{program}: the artifact has no model of its own; pass --lm")
        return Runnable(
            art.info,
            art.module,
            spec,
            dict(art.engine_settings),
            {"program": str(Path(program).resolve()), "artifact_hash": art.hash},
        )
    if Path(program).is_dir():
        raise UsageError(f"{program}: a directory without program.json is not an artifact")
    info = resolve_program(program)
    module = build_program(info, option)
    if lm is None:
        raise UsageError(f"--lm is required when {doing} a program by name (e.g. --lm {example_lm})")
    return Runnable(info, module, lm, {}, {"program": program, "build": dict(parse_option(o) for o in option or [])})
