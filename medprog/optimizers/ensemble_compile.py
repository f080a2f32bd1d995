"""`ensemble`: Span-Cluster Consensus over several span-tagging runs' evaluation outputs.

``medprog compile tagger --optimizer ensemble --members OUT1 OUT2 OUT3 --dev DATA --out ART``
reads each member's submission (the file the program declares in `ProgramInfo.ensemble`, for
the tagger ``OUT/predictions.json``, written by ``medprog eval``), tunes the four thresholds
with Optuna on the dev notes, and stores them (with the mode) in the artifact. ``-o mode=lamar``
runs LAMAR's published consensus instead of medprog's (see `ensemble`). `apply_ensemble`
combines members' test outputs with the tuned parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medprog.optimizers.config import parse_options
from medprog.optimizers.ensemble import ConsensusMode, ConsensusParams, consensus, tune_ensemble
from medprog.optimizers.request import CompileError, CompileRequest
from medprog.programs.registry import EnsembleInputs, ProgramInfo, Spans


@dataclass
class EnsembleConfig:
    """``ensemble``: how the consensus thresholds are tuned."""

    n_trials: int = field(default=60, metadata={"help": "Optuna trials over the four thresholds on the dev notes."})
    mode: ConsensusMode = field(default="medprog", metadata={
        "help": "medprog's consensus rules, or LAMAR's published ones (ensemble/mbr.py), tuned from LAMAR's defaults."})

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ValueError(f"n_trials must be at least 1, got {self.n_trials}")


def read_member(inputs: EnsembleInputs, path: Path) -> Spans:
    """A member's predictions: an eval directory (its submission file) or the file itself."""
    path = Path(path)
    file = path / inputs.submission if path.is_dir() else path
    if not file.is_file():
        raise CompileError(f"{path}: no {inputs.submission} (run `medprog eval` for this member first)")
    return inputs.read(file)


def ensemble_inputs(info: ProgramInfo) -> EnsembleInputs:
    """What the ensemble reads from ``info``'s evaluations; refuses programs without span outputs."""
    if info.ensemble is None:
        raise CompileError(f"the ensemble optimizer combines span predictions; {info.name} declares none")
    return info.ensemble


def compile_ensemble(req: CompileRequest) -> Path:
    """Tune Span-Cluster Consensus over ``req.members`` on the dev notes; save the thresholds."""
    from medprog.artifact import save_artifact

    cfg = parse_options(EnsembleConfig, req.options, optimizer="ensemble")
    info = req.program
    inputs = ensemble_inputs(info)
    members = [Path(m) for m in req.members]
    if len(members) < 2:
        raise CompileError("the ensemble optimizer needs at least two --members (eval output directories)")
    if not req.dev:
        raise CompileError("the ensemble optimizer tunes on dev notes: "
                           "pass --dev DATA (or --train DIR with a val split)")
    dev_notes = inputs.gold(list(req.dev))
    ids = {n.id for n in dev_notes}
    preds = [{k: v for k, v in read_member(inputs, m).items() if k in ids} for m in members]
    params, metrics = tune_ensemble(preds, dev_notes, n_trials=cfg.n_trials, seed=req.seed, mode=cfg.mode)
    from medprog.metrics.meddec import score

    member_metrics = [{k: score(dev_notes, p)[k] for k in ("span_f1", "token_f1", "overall")} for p in preds]
    report = {
        "optimizer": "ensemble", "members": [str(m) for m in members], "dev_members": member_metrics,
        "dev": {"metrics": {k: metrics[k] for k in ("span_f1", "token_f1", "base", "worst", "overall")}},
        "params": params.model_dump(),
    }
    module = info.build(**info.defaults)
    return save_artifact(req.out, info, module, report=report, ensemble=params.model_dump(),
                         extra={"members": [str(m) for m in members]})


def apply_ensemble(artifact: Path, members: list[Path], out: Path) -> Spans:
    """Combine members' predictions with an ensemble artifact's tuned thresholds; write a submission."""
    from medprog.artifact import load_artifact

    art = load_artifact(artifact)
    if not art.ensemble:
        raise ValueError(f"{artifact}: not an ensemble artifact (no tuned parameters in program.json)")
    inputs = ensemble_inputs(art.info)
    combined = consensus([read_member(inputs, m) for m in members], ConsensusParams(**art.ensemble))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    inputs.write(out, combined)
    return combined

