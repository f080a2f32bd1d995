"""medprog's `Signature`: a `dspy.Signature` whose outputs are checked for constrainability when declared."""

from __future__ import annotations

from typing import Any

import dspy

from medprog.engines.types import TaggedText, UnconstrainableOutputError, check_signature

__all__ = ["Signature", "TaggedText", "UnconstrainableOutputError"]


class Signature(dspy.Signature):
    """Declare like a `dspy.Signature`; an output type that cannot be constrained raises at class creation."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.output_fields:
            check_signature(cls)
