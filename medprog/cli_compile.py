"""`medprog compile`: merge a TOML config with the command line, load the data, run an optimizer
(registered by `medprog.cli`)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from medprog.cli_common import (
    AllowRemoteOption,
    NoCacheOption,
    TorchThreadsOption,
    UsageError,
    VerboseOption,
    cli_errors,
    default_split,
    describe_destination,
    log,
    parse_option,
    print_json,
    quiet_library_logs,
    set_threads_for,
)

COMPILE_KEYS = {
    "program",
    "train",
    "dev",
    "split_train",
    "split_dev",
    "optimizer",
    "lm",
    "teacher",
    "out",
    "budget_calls",
    "budget_tokens",
    "seed",
    "base",
    "members",
    "allow_remote",
    "no_cache",
    "max_tokens",
    "threads",
    "torch_threads",
    "verbose",
    "options",
    "settings",
}


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


def load_splits(info: Any, merged: dict[str, Any]) -> tuple[list[Any], str | None, list[Any], str | None]:
    """(train examples, train split, dev examples, dev split); dev defaults to the --train directory's 'val'."""
    train_path = Path(merged["train"]) if merged.get("train") else None
    train_split = default_split(train_path, merged.get("split_train"), "train") if train_path else None
    train = list(info.load(train_path, train_split)) if train_path else []
    dev_path = Path(merged["dev"]) if merged.get("dev") else None
    if dev_path is None and train_path is not None and train_path.is_dir():
        dev_split = default_split(train_path, merged.get("split_dev"), "val")
        dev_path = train_path if dev_split is not None else None
    else:
        dev_split = default_split(dev_path, merged.get("split_dev"), "val") if dev_path else None
    dev = list(info.load(dev_path, dev_split)) if dev_path else []
    return train, train_split, dev, dev_split


def merge_settings(cli: dict[str, Any], config: Path | None, option: list[str] | None) -> tuple[dict, dict]:
    """(settings, optimizer options): the command line over the TOML config, ``-o`` over its ``[options]``."""
    cfg = read_config(config) if config else {}
    merged = {**cfg, **{k: v for k, v in cli.items() if v is not None}}
    options = dict(cfg.get("options") or {})
    options.update(dict(parse_option(o) for o in option or []))
    for key in ("program", "optimizer", "out"):
        if not merged.get(key):
            raise UsageError(f"missing {key if key == 'program' else '--' + key} (on the command line or in --config)")
    return merged, options


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
    allow_remote: AllowRemoteOption = None,  # type: ignore[assignment]
    no_cache: NoCacheOption = None,  # type: ignore[assignment]
    max_tokens: int = typer.Option(None, "--max-tokens", help="Completion token limit per call (default 1024)."),
    threads: int = typer.Option(None, "--threads", help="Concurrent examples inside the optimizer."),
    torch_threads: TorchThreadsOption = None,
    verbose: VerboseOption = None,  # type: ignore[assignment]
    json_out: bool = typer.Option(False, "--json", help="Print the compile report as JSON on stdout."),
) -> None:
    """Compile a program against data with an optimizer; write an artifact directory."""
    from medprog.optimizers import get_optimizer
    from medprog.optimizers.base import CompileError
    from medprog.programs.registry import resolve_program

    args = list(args or [])
    cli: dict[str, Any] = dict(program=args[0] if args else None, train=train, dev=dev, split_train=split_train,
                               split_dev=split_dev, optimizer=optimizer, lm=lm, teacher=teacher, out=out,
                               budget_calls=budget_calls, budget_tokens=budget_tokens, seed=seed, base=base,
                               members=list(members or []) + [Path(a) for a in args[1:]] or None,
                               allow_remote=allow_remote, no_cache=no_cache, max_tokens=max_tokens, threads=threads,
                               torch_threads=torch_threads, verbose=verbose)
    if args[1:] and not members:
        raise UsageError(f"unexpected argument(s) {args[1:]}; only --members takes several values")
    merged, options = merge_settings(cli, config, option)
    quiet_library_logs(bool(merged.get("verbose")))
    info = resolve_program(str(merged["program"]))
    name = str(merged["optimizer"])
    fn = get_optimizer(name)
    train_examples, train_split, dev_examples, dev_split = load_splits(info, merged)
    req = compile_request(info, merged, options, train_examples, dev_examples)
    set_threads_for([req.lm, req.teacher], merged.get("torch_threads"))
    for who, spec in (("student", req.lm), ("teacher", req.teacher)):
        if spec:
            log(f"{who} text goes to {describe_destination(spec)}")
    log(f"compiling {info.name} with {name}: {len(train_examples)} train"
        + (f" ({train_split})" if train_split else "") + f", {len(dev_examples)} dev"
        + (f" ({dev_split})" if dev_split else ""))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # optimizers print progress; stdout is for --json
            path = fn(req)
    except CompileError as e:
        raise UsageError(str(e)) from None
    show_report(Path(path), json_out)


def show_report(path: Path, json_out: bool) -> None:
    """The artifact's report.json: as JSON on stdout, or a summary table."""
    report_path = path / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    if json_out:
        print_json({"artifact": str(path), **report})
        return
    log(f"artifact written to {path}")
    print_summary(report)


def compile_request(
    info: Any, merged: dict[str, Any], options: dict[str, Any], train: list[Any], dev: list[Any]
) -> Any:
    """The optimizer's request: ``-o`` keys split into run settings, program settings and optimizer options."""
    from medprog.optimizers.base import CompileRequest
    from medprog.optimizers.config import run_settings, split_options

    run_opts, request_opts, options = split_options(options)
    flags = {k: merged.get(k) for k in ("allow_remote", "no_cache", "max_tokens", "threads")}
    settings = {**(merged.get("settings") or {}), **(request_opts.get("settings") or {})}
    return CompileRequest(
        program=info,
        train=train,
        dev=dev,
        lm=merged.get("lm"),
        teacher=merged.get("teacher"),
        out=Path(merged["out"]),
        budget_calls=merged.get("budget_calls"),
        budget_tokens=merged.get("budget_tokens"),
        seed=int(merged.get("seed") or 0),
        options=options,
        run=run_settings({"progress": True, **run_opts, **flags}),
        settings=settings or None,
        base=str(merged["base"]) if merged.get("base") else None,
        members=[Path(m) for m in merged.get("members") or []],
    )


def print_summary(report: dict[str, Any]) -> None:
    dev = report.get("dev") or {}
    table = Table("metric", "value", title=f"{report.get('eval_set', 'dev')} metrics")
    for k, v in (dev.get("metrics") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)
    comp = report.get("compile") or {}
    total = (comp.get("usage") or {}).get("total") or {}
    if total:
        Console().print(
            f"compile: {total.get('calls', 0)} calls ({total.get('cache_hits', 0)} cached), "
            f"{total.get('prompt_tokens', 0)} prompt + {total.get('completion_tokens', 0)} completion "
            f"tokens, {comp.get('wall_s', 0):.1f} s"
            + (f"; stopped early: {comp['stopped_early']}" if comp.get("stopped_early") else "")
        )
