"""Where tokens come from: local transformers, OpenAI-compatible servers, in-process vLLM."""

from medprog.engines.accounting import Ledger, Usage, step
from medprog.engines.base import Completion, Engine, EngineError, Sampling
from medprog.engines.constraints import (
    ChoiceConstraint,
    Constraint,
    ConstraintViolation,
    JsonConstraint,
    TaggedConstraint,
    constraint_for,
)
from medprog.engines.spec import LMSpec, LMSpecError, make_engine, parse_lm_spec

__all__ = [
    "ChoiceConstraint", "Completion", "Constraint", "ConstraintViolation", "Engine", "EngineError",
    "JsonConstraint", "LMSpec", "LMSpecError", "Ledger", "Sampling", "TaggedConstraint", "Usage",
    "constraint_for", "make_engine", "parse_lm_spec", "step",
]
