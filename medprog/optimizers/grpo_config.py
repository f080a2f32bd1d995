"""`GRPOConfig`: every knob of the ``grpo`` optimizer (``-o KEY=VALUE``), with its default and why.

Defaults size a CPU demonstration run; they are handed to TRL's own ``GRPOConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GRPOConfig:
    """Settings of the ``grpo`` compile strategy (`medprog.optimizers.grpo`)."""

    predictor: str | None = field(default=None, metadata={"help": (
        "Which predictor of the program to train; None: the program's only one.")})
    steps: int = field(default=20, metadata={"help": "Optimizer steps."})
    num_generations: int = field(default=4, metadata={"help": "Completions sampled per prompt (the group)."})
    batch_size: int = field(default=4, metadata={"help": (
        "Completions per step (TRL needs it divisible by num_generations).")})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts."})
    loss_type: str = field(default="dapo", metadata={"help": "TRL's GRPO loss (dapo, grpo, bnpo, dr_grpo, ...)."})
    multi_objective_aggregation: str = field(default="normalize_then_sum", metadata={"help": (
        "How TRL combines several rewards into one advantage.")})
    max_completion_length: int = field(default=384, metadata={"help": (
        "Token limit of free (unconstrained) rollouts; a constrained tagging rollout always runs to its end.")})
    constrained: bool = field(default=True, metadata={"help": (
        "Sample TaggedText outputs under the tagging constraint (faithful copies; loss only on the decisions) "
        "and a lone choice output under its choice constraint (one of the example's options).")})
    lora: bool = field(default=True, metadata={"help": "Train LoRA adapters (merged on save) instead of full weights."})
    beta: float = field(default=0.0, metadata={"help": (
        "KL penalty towards the starting model (0: none, and no reference copy).")})
    limit: int = field(default=64, metadata={"help": "Training prompts used (the first ``limit`` examples)."})
    threads: int | None = field(default=None, metadata={"help": (
        "Torch threads; None: the cores idle when training starts.")})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_completion_length", "limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be at least 2 (GRPO compares a group), got {self.num_generations}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if not self.learning_rate > 0 or not self.temperature > 0:
            raise ValueError("learning_rate and temperature must be positive")
        if self.beta < 0:
            raise ValueError(f"beta must not be negative, got {self.beta}")
