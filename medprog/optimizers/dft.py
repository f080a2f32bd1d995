"""`dft`: fine-tune the model behind a program's signature on gold demonstrations.

The examples are the program's own (`ProgramInfo.train_examples`: for the tagger, one per sentence
window), rendered exactly as the engine renders them (`training_data`, `batches`). Loss on
completion tokens only, in one of two objectives (`losses`): ``vocab``, medprog's fused DFT /
cross-entropy kernel over the whole vocabulary, so full-vocabulary logits never exist; or
``choice`` for tagging, the loss over the tokens the tagging constraint admits plus a category
loss and a copy loss. Both run inside TRL's `SFTTrainer` under a wall-clock budget
(`dft_train`). With ``--base`` the base model is fine-tuned (LoRA via peft, or full weights);
without it the embedded default model is built from scratch and trained with cross-entropy (DFT
cannot start from random weights, where p_y ≈ 1/V scales every gradient towards zero). Every knob
is a field of `DFTConfig` (``-o KEY=VALUE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medprog.optimizers.config import parse_options
from medprog.optimizers.dft_config import DFTConfig
from medprog.optimizers.dft_train import train_dft
from medprog.optimizers.request import CompileError, CompileRequest
from medprog.optimizers.weights import WeightsTarget, resolve_base, run_weights


def dft_config_from_options(options: Mapping[str, Any], seed: int = 0) -> DFTConfig:
    """A `DFTConfig` from ``-o`` options (``base`` may be among them: it is resolved to a model directory)."""
    rest = {k: v for k, v in options.items() if k != "base"}
    return parse_options(DFTConfig, rest, optimizer="dft", base=resolve_base(options.get("base")), seed=seed)


def compile_dft(req: CompileRequest) -> Path:
    """``medprog compile PROGRAM --optimizer dft``: train weights, evaluate on dev, save the artifact."""
    cfg = dft_config_from_options({**req.options, "base": req.base}, req.seed)
    if not req.train:
        raise CompileError("the dft optimizer needs gold demonstrations (--train)")

    def train(target: WeightsTarget) -> dict[str, Any]:
        examples = target.training_examples(req.train)
        return {"training": train_dft(target.signature, examples, target.weights, cfg)}

    return run_weights(req, "dft", cfg.predictor, cfg.threads, train)


__all__ = ["DFTConfig", "compile_dft", "dft_config_from_options", "train_dft"]
