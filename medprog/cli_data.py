"""`medprog data synth`, `medprog score meddec`, `medprog baseline` and `medprog ensemble-apply`:
datasets, official scoring and the MedDec-only commands (registered by `medprog.cli`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medprog.cli_common import UsageError, cli_errors, log, print_json

SYNTHESIZERS = {
    "meddec": "medprog.data.synth_meddec:synth_meddec",
    "meddec-ood": "medprog.data.synth_meddec_ood:synth_meddec_ood",
    "medqa": "medprog.data.medqa:synth_medqa",
    "hospital": "medprog.data.hospital:synth_hospital",
    "icd": "medprog.data.icd_notes:synth_icd_notes",
    "registry": "medprog.data.synth_registry:synth_registry",
}
"""``medprog data synth NAME``: generator functions ``fn(out, n, seed) -> summary``."""


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
    print_json(summary if summary is not None else {"out": str(out)})


@cli_errors
def score_meddec_cmd(
    gold: Path = typer.Option(..., "--gold", help="MedDec directory (data/, raw_text/, stats.csv, splits/)."),
    pred: Path = typer.Option(
        ..., "--pred", help="Submission JSON: [{file_name, predictions: [{start_offset, end_offset, category}]}]."
    ),
    split: str = typer.Option(None, "--split", help="Score only this split's notes."),
    out: Path = typer.Option(None, "--out", help="Also write metrics.json here (a directory)."),
) -> None:
    """Official-equivalent MedDec metrics: span F1, token F1, worst subgroup, overall."""
    from medprog.programs.tagger_outputs import score_submission

    metrics = score_submission(gold, pred, split)
    if out is not None:
        from medprog.engines.cache import private_dir

        (private_dir(out) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print_json(metrics)


@cli_errors
def baseline_cmd(
    task: str = typer.Argument("meddec", help="Task (meddec)."),
    data: Path = typer.Option(..., "--data", help="MedDec directory."),
    split: str = typer.Option("test", "--split", help="Split to score."),
    train_split: str = typer.Option("train", "--train-split", help="Split the keyword lexicon is learned from."),
    train_data: Path = typer.Option(
        None,
        "--train-data",
        help="MedDec directory holding --train-split (default: --data), e.g. the "
        "training set when --data is an evaluation-only set such as meddec-ood.",
    ),
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
        raise UsageError(
            f"{e}; the keyword rule needs training notes: pass --train-data DIR "
            "(e.g. the training set when --data is evaluation-only)"
        ) from None
    keyword = keyword_baseline(train_notes)
    log(f"keyword rule learned from {train_data or data} split {train_split!r} ({len(train_notes)} notes)")
    table = Table("baseline", "span F1", "token F1", "worst", "overall")
    for name, preds in (("no-tag", no_tag_baseline(notes)), ("keyword", keyword(notes))):
        m = score(notes, preds)
        table.add_row(name, *(f"{m[k]:.4f}" for k in ("span_f1", "token_f1", "worst", "overall")))
    Console().print(table)


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
        print_json({k: m[k] for k in ("span_f1", "token_f1", "base", "worst", "overall")})
    else:
        log(f"wrote {out}")
