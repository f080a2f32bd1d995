"""`medprog run`, `medprog eval` and `medprog compare` (registered by `medprog.cli`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from medprog import cli_common as common
from medprog.cli_common import (
    AllowRemoteOption,
    BuildOption,
    LmOption,
    NoCacheOption,
    TorchThreadsOption,
    UsageError,
    VerboseOption,
    cli_errors,
    default_split,
    describe_destination,
    jsonable,
    log,
    print_json,
    quiet_library_logs,
    read_json_file,
    resolve_runnable,
    usage_table,
)


@cli_errors
def run_cmd(
    program: str = typer.Argument(..., help="A registered program name or a compiled artifact directory."),
    input: Path = typer.Option(..., "--input", help="JSON file with the program's inputs (one object)."),
    lm: LmOption = None,
    allow_remote: AllowRemoteOption = False,
    no_cache: NoCacheOption = False,
    max_tokens: int = typer.Option(None, "--max-tokens", help="Completion token limit per call (default 1024)."),
    torch_threads: TorchThreadsOption = None,
    option: BuildOption = None,
) -> None:
    """Run one program on one input and print its typed output as JSON."""
    import dspy

    from medprog.engines.base import DEFAULT_MAX_TOKENS
    from medprog.signatures.adapter import MedprogAdapter

    inputs = read_json_file(input)
    if not isinstance(inputs, dict):
        raise UsageError(f"{input}: expected one JSON object with the program's inputs")
    r = resolve_runnable(program, lm, option, doing="running", example_lm="local:art/tagger/model")
    common.set_threads_for([r.spec], torch_threads)
    engine = common.build_lm(r.spec, allow_remote=allow_remote, no_cache=no_cache)
    with dspy.context(lm=engine.as_lm(max_tokens=max_tokens or DEFAULT_MAX_TOKENS, temperature=0.0), adapter=MedprogAdapter()):
        prediction = r.module(**inputs)
    out = {k: jsonable(v) for k, v in dict(prediction).items()}
    out["_usage"] = engine.ledger.snapshot()
    print(json.dumps(out, indent=2, ensure_ascii=False))


@cli_errors
def eval_cmd(
    program: str = typer.Argument(..., help="A registered program name (or module:ATTR) or an artifact directory."),
    data: Path = typer.Option(..., "--data", help="Evaluation data: a file, or a directory with splits."),
    split: str | None = typer.Option(
        None, "--split", help="Split of a data directory (default: test, when it exists)."
    ),
    lm: LmOption = None,
    out: Path = typer.Option(..., "--out", help="Run directory: predictions.jsonl, metrics.json, report.html."),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="Examples in flight at once."),
    resume: bool = typer.Option(False, "--resume", help="Skip examples already in OUT/predictions.jsonl."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="With --resume, run failed examples again."),
    limit: int = typer.Option(None, "--limit", min=1, help="Only the first N examples."),
    allow_remote: AllowRemoteOption = False,
    no_cache: NoCacheOption = False,
    max_tokens: int = typer.Option(None, "--max-tokens", help="Completion token limit per call."),
    torch_threads: TorchThreadsOption = None,
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    verbose: VerboseOption = False,
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json on stdout."),
    option: BuildOption = None,
) -> None:
    """Evaluate a program or artifact with its task's metric; stream predictions, resume, report."""
    from medprog.evaluation import EvalRunError, evaluate

    quiet_library_logs(verbose)
    r = resolve_runnable(program, lm, option, doing="evaluating", example_lm="local:art/tagger/weights")
    if max_tokens:
        r.lm_kwargs["max_tokens"] = max_tokens
    split = default_split(data, split, "test")
    examples = list(r.info.load(data, split))
    if limit:
        examples = examples[:limit]
    r.settings.update(lm=r.spec, data=str(data.resolve()), split=split, sent_to=describe_destination(r.spec))
    log(f"text goes to {describe_destination(r.spec)}")
    common.set_threads_for([r.spec], torch_threads)
    engine = common.build_lm(r.spec, no_cache=no_cache, allow_remote=allow_remote, concurrency=concurrency)
    log(
        f"evaluating {r.info.name} on {len(examples)} examples"
        + (f" ({split})" if split else "")
        + f", concurrency {concurrency}, writing {out}"
    )
    try:
        result = evaluate(
            r.info,
            r.module,
            examples,
            engine,
            out,
            concurrency=concurrency,
            resume=resume,
            settings=r.settings,
            lm_kwargs=r.lm_kwargs,
            progress=not no_progress,
            retry_errors=retry_errors,
        )
    except EvalRunError as e:
        raise UsageError(str(e)) from None
    finally:
        engine.close()
    show_result(r.info.name, result, json_out)


def show_result(name: str, result: Any, json_out: bool) -> None:
    """An evaluation's summary: as JSON on stdout, or metric and cost tables."""
    if json_out:
        print_json(result.summary)
        return
    s = result.summary
    table = Table("metric", "value", title=f"{name}: {s['n_done']}/{s['n']} done, {s['n_failed']} failed")
    for k, v in result.metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)
    Console().print(usage_table(s["usage"], "cost"))
    log(f"wrote {', '.join(str(f) for f in result.files)}")


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
        print_json(c.to_dict())
        return
    table = Table("metric", "A", "B", "B − A", title=f"{run_b} vs {run_a}")

    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.4f}"

    for k, row in c.metrics.items():
        table.add_row(k, f(row["a"]), f(row["b"]), f(row["diff"]))
    Console().print(table)
    if c.n_shared:
        pct = int(round(c.confidence * 100))
        Console().print(
            f"per-example score over {c.n_shared} shared examples: A {c.mean_a:.4f}, B {c.mean_b:.4f}, "
            f"B − A {c.diff:+.4f} ({pct}% paired bootstrap CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}], "
            f"P(B ≤ A) ≈ {c.p_b_not_better:.3f}, {c.n_boot} resamples)"
        )
    else:
        Console().print("no shared examples with scores: no confidence interval")
    if c.only_a or c.only_b:
        Console().print(f"only in A: {c.only_a} examples; only in B: {c.only_b}")
