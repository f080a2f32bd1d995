"""Configs of the prompt optimizers (``-o KEY=VALUE``): one dataclass per strategy, each field with its
default and what it does. Defaults keep small runs small; they are handed to dspy's optimizers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medprog.engines.base import DEFAULT_MAX_TOKENS

Auto = Literal["light", "medium", "heavy"]


def _check_positive(cfg: object, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


@dataclass
class BootstrapConfig:
    """``bootstrap``: few-shot demos from the program's own successful traces (dspy BootstrapFewShot)."""

    max_bootstrapped_demos: int = field(default=4, metadata={"help": "Demos bootstrapped from traces, per predictor."})
    max_labeled_demos: int = field(default=4, metadata={"help": "Gold training examples used as demos, per predictor."})
    max_rounds: int = field(default=1, metadata={"help": "Bootstrap attempts per training example."})
    max_errors: int | None = field(default=None, metadata={"help": "Errors tolerated before stopping (None: dspy's)."})
    metric_threshold: float | None = field(default=None, metadata={"help": (
        "A trace becomes a demo when its score reaches this (None: any non-zero score).")})

    def __post_init__(self) -> None:
        if self.max_bootstrapped_demos < 0 or self.max_labeled_demos < 0:
            raise ValueError("demo counts must not be negative")
        _check_positive(self, "max_rounds", "max_errors")


@dataclass
class RandomSearchConfig(BootstrapConfig):
    """``random-search``: several bootstrapped demo sets scored on dev (BootstrapFewShotWithRandomSearch)."""

    num_candidates: int = field(default=4, metadata={"help": "Candidate programs scored."})
    stop_at_score: float | None = field(default=None, metadata={"help": "Stop once a candidate reaches this score."})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "num_candidates")


@dataclass
class MIPROConfig(BootstrapConfig):
    """``mipro``: instructions and demo sets searched jointly (dspy MIPROv2). Set ``auto``, or both
    ``num_candidates`` and ``num_trials`` for an explicit, small search."""

    auto: Auto | None = field(default="light", metadata={"help": (
        "Search size; ignored when num_candidates and num_trials are set.")})
    num_candidates: int | None = field(default=None, metadata={"help": (
        "Instruction / demo-set candidates per predictor.")})
    num_trials: int | None = field(default=None, metadata={"help": "Bayesian-optimisation trials."})
    prompt_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the prompt model."})
    prompt_max_tokens: int = field(default=DEFAULT_MAX_TOKENS, metadata={
        "help": "Token limit of a proposed instruction."})
    minibatch: bool | None = field(default=None, metadata={"help": (
        "Score candidates on minibatches (None: when the validation set exceeds minibatch_size).")})
    minibatch_size: int = field(default=35, metadata={"help": "Examples per minibatch."})
    program_aware_proposer: bool = field(default=True, metadata={"help": "Show the proposer the program's code."})
    data_aware_proposer: bool = field(default=True, metadata={"help": "Show the proposer a summary of the data."})
    tip_aware_proposer: bool = field(default=True, metadata={"help": "Give the proposer a random prompting tip."})
    fewshot_aware_proposer: bool = field(default=True, metadata={"help": "Show the proposer the demos."})
    view_data_batch_size: int = field(default=10, metadata={"help": "Examples per batch of the data summary."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.num_candidates is None) != (self.num_trials is None):
            raise ValueError("mipro: set both num_candidates and num_trials, or neither (then auto sizes the search)")
        _check_positive(self, "num_candidates", "num_trials", "prompt_max_tokens", "minibatch_size",
                        "view_data_batch_size")

    @property
    def explicit(self) -> bool:
        return self.num_candidates is not None


@dataclass
class GEPAConfig:
    """``gepa``: instructions evolved by reflection on traces and feedback (dspy GEPA). The budget is
    ``max_metric_calls``, else ``max_full_evals``, else ``auto``."""

    auto: Auto = field(default="light", metadata={"help": "Search size when no explicit budget is set."})
    max_metric_calls: int | None = field(default=None, metadata={"help": "Metric calls in all."})
    max_full_evals: int | None = field(default=None, metadata={"help": "Full validation-set evaluations in all."})
    reflection_temperature: float = field(default=1.0, metadata={"help": (
        "Sampling temperature of the reflection model.")})
    reflection_max_tokens: int = field(default=DEFAULT_MAX_TOKENS, metadata={"help": "Token limit of one reflection."})
    reflection_minibatch_size: int = field(default=3, metadata={"help": "Examples reflected on per iteration."})
    instruction_max_chars: int = field(default=3000, metadata={"help": "Longest instruction a proposal may write."})
    candidate_selection_strategy: Literal["pareto", "current_best"] = field(default="pareto", metadata={"help": (
        "Which candidate to mutate next.")})
    use_merge: bool = field(default=True, metadata={"help": (
        "Also merge candidates that do well on different examples.")})
    perfect_score: float = field(default=1.0, metadata={"help": "A score that needs no further reflection."})

    def __post_init__(self) -> None:
        _check_positive(self, "max_metric_calls", "max_full_evals", "reflection_max_tokens",
                        "reflection_minibatch_size", "instruction_max_chars")

    def budget(self) -> dict[str, object]:
        """GEPA's budget keyword: exactly one of max_metric_calls, max_full_evals, auto."""
        if self.max_metric_calls is not None:
            return {"max_metric_calls": self.max_metric_calls}
        if self.max_full_evals is not None:
            return {"max_full_evals": self.max_full_evals}
        return {"auto": self.auto}
