"""`pseudolabel`: self-training on unlabelled inputs (LAMAR's last stage).

A compiled program labels unlabelled examples; each label — for the tagger, each window the
predictor saw — is scored by the mean negative log-likelihood the model gives its own output
(teacher-forced, exactly the training rendering; for a model trained on the tagging
constraint's choices, over those choices: the distribution it actually decodes from); the
most confident quantile is mixed with the gold training set and the model is fine-tuned again
with DFT. Dev metrics before and after go in the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dspy


def mean_nll(model, tokenizer, signature: Any, examples: list[dspy.Example], choice: bool = False) -> list[float]:
    """Mean negative log-likelihood of each example's own output: per completion token, or with
    ``choice`` per decision the tagging constraint leaves open (the training objective's own loss)."""
    import torch

    from medprog.optimizers.dft import _collate, _loss, _rows

    collate = _collate(tokenizer.pad_token_id)
    model.eval()
    with torch.inference_mode():
        return [float(_loss(model, collate(_rows(signature, [ex], tokenizer, choice)), "ce")) for ex in examples]


def _load_split(info: Any, spec: str) -> list[dspy.Example]:
    path, _, split = spec.partition(":")
    return list(info.load(Path(path), split or None))


def compile_pseudolabel(req: Any) -> Path:
    """``medprog compile PROGRAM --optimizer pseudolabel --base ARTIFACT --train DATA -o unlabelled=DIR[:SPLIT]``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medprog.artifact import save_artifact
    from medprog.engines.spec import make_engine
    from medprog.evaluation import evaluate
    from medprog.optimizers.base import CompileError
    from medprog.optimizers.dft import (_base_model_dir, _the_predictor, _trained_on_choices, dft_config_from_options,
                                        train_dft)
    from medprog.engines.constraints import output_mode

    info = req.program
    base = _base_model_dir(req.options.get("base"))
    if base is None or "unlabelled" not in req.options:
        raise CompileError("pseudolabel needs --base ARTIFACT and -o unlabelled=DIR[:SPLIT]")
    quantile = float(req.options.get("quantile", 0.1))
    settings = {**info.defaults, **(req.options.get("settings") or {})}
    module = info.build(**settings)
    _, predictor = _the_predictor(module, req.options.get("predictor"))
    signature = predictor.signature
    out_field = next(iter(signature.output_fields))
    unlabelled = _load_split(info, str(req.options["unlabelled"]))
    limit = int(req.options.get("limit", len(unlabelled)))
    unlabelled = unlabelled[:limit]
    t0 = time.perf_counter()

    def dev_metrics(model_dir: str) -> dict[str, Any]:
        if not req.dev:
            return {}
        result = evaluate(info, module, req.dev, make_engine(f"local:{model_dir}", cache_dir=False), None,
                          concurrency=8, lm_kwargs={"temperature": 0.0}, progress=False)
        return result.metrics

    labelled = evaluate(info, module, unlabelled, make_engine(f"local:{base}", cache_dir=False), None,
                        concurrency=8, lm_kwargs={"temperature": 0.0}, progress=False)
    by_id = {str(ex.id): ex for ex in unlabelled}
    candidates = []
    for line in labelled.lines:
        rec = line.get("record") or {}
        output = rec.get(out_field)
        if line.get("error") is not None or output is None or str(rec.get("id")) not in by_id:
            continue
        candidates.append(by_id[str(rec["id"])].copy(**{out_field: output}))
    gold, labelled_ok = list(req.train), len(candidates)
    if info.train_examples:
        candidates, gold = info.train_examples(candidates, settings), info.train_examples(gold, settings)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    choice = output_mode(signature) == "tagged" and _trained_on_choices(base)
    nll = mean_nll(model, tokenizer, signature, candidates, choice)
    keep_n = max(1, int(round(quantile * len(candidates)))) if candidates else 0
    ranked = sorted(zip(nll, range(len(candidates))))[:keep_n]
    kept = [candidates[i] for _, i in ranked]
    before = dev_metrics(base)
    cfg = dft_config_from_options({**req.options, "base": req.options["base"]}, req.seed)
    cfg.lora = bool(req.options.get("lora", False))
    weights = Path(req.out) / "weights"
    training = train_dft(signature, gold + kept, weights, cfg)
    after = dev_metrics(str(weights))
    report = {
        "optimizer": "pseudolabel", "unlabelled": len(unlabelled), "labelled_ok": labelled_ok, "kept": len(kept),
        "candidates": len(candidates), "confidence": "choice NLL" if choice else "token NLL",
        "quantile": quantile, "kept_mean_nll": [round(x, 4) for x, _ in ranked],
        "dev_before": before, "dev_after": after, "training": training, "wall_s": round(time.perf_counter() - t0, 2),
    }
    return save_artifact(req.out, info, module, settings=settings, report=report, weights=weights,
                         engine={"temperature": 0.0})
