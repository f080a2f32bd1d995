"""`pseudolabel`: self-training on unlabelled inputs (LAMAR's last stage).

A compiled program labels unlabelled examples; each label — for the tagger, each window the
predictor saw — is scored by the mean negative log-likelihood the model gives its own output
(teacher-forced, exactly the training rendering; for a model trained on the tagging
constraint's choices, over those choices: the distribution it actually decodes from); the
most confident quantile is mixed with the gold training set and the model is fine-tuned again
with DFT. Dev metrics before and after go in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from medprog.engines.constraints import output_mode
from medprog.optimizers.batches import collator, trained_on_choices, training_rows
from medprog.optimizers.config import parse_options
from medprog.optimizers.dft_config import DFTConfig
from medprog.optimizers.dft_train import train_dft
from medprog.optimizers.losses import training_loss
from medprog.optimizers.request import CompileError, CompileRequest
from medprog.optimizers.weights import WeightsTarget, evaluate_weights, resolve_base, run_weights


@dataclass
class PseudolabelConfig(DFTConfig):
    """`DFTConfig` for the fine-tuning, plus where the unlabelled inputs are and how many labels to keep."""

    unlabelled: str | None = field(default=None, metadata={"help": (
        "Unlabelled inputs: DIR[:SPLIT] or FILE, in the program's data format (gold outputs there are ignored).")})
    quantile: float = field(default=0.1, metadata={"help": "Fraction of the labels kept, most confident first."})
    limit: int | None = field(default=None, metadata={"help": "Label only the first N unlabelled examples."})
    lora: bool = field(default=False, metadata={"help": (
        "Train LoRA adapters instead of full weights (off: the base is usually medprog's own small model).")})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.unlabelled:
            raise ValueError("pseudolabel needs -o unlabelled=DIR[:SPLIT]")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {self.quantile}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")


def mean_nll(model, tokenizer, signature: Any, examples: list[dspy.Example], choice: bool = False) -> list[float]:
    """Mean negative log-likelihood of each example's own output: per completion token, or with
    ``choice`` per decision the tagging constraint leaves open (the training objective's own loss)."""
    import torch

    collate = collator(tokenizer.pad_token_id)
    model.eval()
    with torch.inference_mode():
        return [float(training_loss(model, collate(training_rows(signature, [ex], tokenizer, choice)), "ce"))
                for ex in examples]


def _load_split(info: Any, spec: str) -> list[dspy.Example]:
    path, _, split = spec.partition(":")
    return list(info.load(Path(path), split or None))


def _label(target: WeightsTarget, base: str, unlabelled: list[dspy.Example]) -> list[dspy.Example]:
    """The unlabelled examples with the base model's outputs as their labels (failed ones left out)."""
    from medprog.engines.spec import make_engine
    from medprog.evaluation import evaluate

    out_field = next(iter(target.signature.output_fields))
    engine = make_engine(f"local:{base}", cache_dir=False)
    try:
        labelled = evaluate(target.req.program, target.module, unlabelled, engine, None,
                            concurrency=target.req.run.threads or 8, lm_kwargs={"temperature": 0.0}, progress=False)
    finally:
        engine.close()
    by_id = {str(ex.id): ex for ex in unlabelled}
    out = []
    for line in labelled.lines:
        rec = line.get("record") or {}
        output = rec.get(out_field)
        if line.get("error") is None and output is not None and str(rec.get("id")) in by_id:
            out.append(by_id[str(rec["id"])].copy(**{out_field: output}))
    return out


def train_pseudolabel(target: WeightsTarget, cfg: PseudolabelConfig) -> dict[str, Any]:
    """Label, rank by confidence, keep the top quantile, fine-tune on gold + kept; dev before and after."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = str(cfg.base)
    unlabelled = _load_split(target.req.program, str(cfg.unlabelled))[: cfg.limit]
    candidates = _label(target, base, unlabelled)
    labelled_ok = len(candidates)
    candidates, gold = target.training_examples(candidates), target.training_examples(target.req.train)
    choice = output_mode(target.signature) == "tagged" and trained_on_choices(base)
    nll = mean_nll(AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base), target.signature,
                   candidates, choice)
    keep_n = max(1, int(round(cfg.quantile * len(candidates)))) if candidates else 0
    ranked = sorted(zip(nll, range(len(candidates))))[:keep_n]
    before = evaluate_weights(target, base)
    training = train_dft(target.signature, gold + [candidates[i] for _, i in ranked], target.weights, cfg)
    after = evaluate_weights(target, target.weights)
    report = {
        "unlabelled": len(unlabelled), "labelled_ok": labelled_ok, "kept": len(ranked),
        "candidates": len(candidates), "confidence": "choice NLL" if choice else "token NLL",
        "quantile": cfg.quantile, "kept_mean_nll": [round(x, 4) for x, _ in ranked],
        "dev_before": (before or {}).get("metrics", {}), "dev_after": (after or {}).get("metrics", {}),
        "training": training,
    }
    return {**report, "dev": after} if after is not None else report


def compile_pseudolabel(req: CompileRequest) -> Path:
    """``medprog compile PROGRAM --optimizer pseudolabel --base ARTIFACT --train DATA -o unlabelled=DIR[:SPLIT]``."""
    base = resolve_base(req.base)
    if base is None:
        raise CompileError("pseudolabel needs --base ARTIFACT and -o unlabelled=DIR[:SPLIT]")
    cfg = parse_options(PseudolabelConfig, req.options, optimizer="pseudolabel", base=base, seed=req.seed)
    return run_weights(req, "pseudolabel", cfg.predictor, cfg.threads, lambda target: train_pseudolabel(target, cfg))
