"""The dspy adapter every medprog program uses.

It renders a signature call as chat messages (system: instructions and output format;
one user/assistant pair per demo; user: the inputs), attaches the call's decoding
constraint as the request's ``response_format`` (so it reaches the engine and the cache
key), and reads the constrained completion back into typed values. What the assistant
writes is exactly the constrained text: a tagged copy, a bare choice, or compact JSON.
"""

from __future__ import annotations

import json
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from medprog.engines.accounting import current_step, step
from medprog.engines.constraints import (
    ConstraintViolation,
    constraint_for,
    output_mode,
    output_model,
    output_text,
    parse_output,
    to_response_format,
)
from medprog.engines.tagging import TagLimits


def _render_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json()
    return json.dumps(value, ensure_ascii=False, default=lambda o: o.model_dump() if hasattr(o, "model_dump") else str(o))


def format_inputs(signature: Any, inputs: dict[str, Any]) -> str:
    return "\n\n".join(f"{name}:\n{_render_value(inputs[name])}" for name in signature.input_fields if name in inputs)


def output_instructions(signature: Any) -> str:
    mode = output_mode(signature)
    (name, field), *_ = signature.output_fields.items()
    if mode == "tagged":
        tags = ", ".join(field.annotation.tags)
        return f"Answer with {field.annotation.source} copied verbatim, with inline XML tags from: {tags}."
    if mode == "choice":
        return f"Answer with exactly one of: {', '.join(map(str, field.annotation.__args__))}."
    schema = json.dumps(output_model(signature).model_json_schema(), separators=(",", ":"))
    return f"Answer with one JSON object matching this schema: {schema}"


def format_messages(signature: Any, demos: list[Any], inputs: dict[str, Any]) -> list[dict[str, str]]:
    """The chat messages for one call (also what the weight optimizers train on)."""
    system = f"{signature.instructions.strip()}\n\n{output_instructions(signature)}".strip()
    messages = [{"role": "system", "content": system}]
    for demo in demos:
        d = dict(demo)
        if not all(k in d for k in signature.output_fields):
            continue
        messages.append({"role": "user", "content": format_inputs(signature, d)})
        messages.append({"role": "assistant", "content": output_text(signature, d)})
    messages.append({"role": "user", "content": format_inputs(signature, inputs)})
    return messages


def constrained_kwargs(lm_kwargs: dict[str, Any], signature: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """The LM's kwargs with the call's constraint as ``response_format``; a predictor's
    ``tag_limits`` config (e.g. ``dspy.Predict(sig, tag_limits=...)``) goes into the constraint."""
    rest = {k: v for k, v in lm_kwargs.items() if k != "tag_limits"}
    limits = lm_kwargs.get("tag_limits")
    limits = TagLimits.model_validate(limits) if limits is not None else None
    return {**rest, "response_format": to_response_format(constraint_for(signature, inputs, limits))}


class MedprogAdapter(dspy.Adapter):
    """Constrained formatting and parsing for medprog signatures."""

    def __init__(self) -> None:
        super().__init__(use_native_function_calling=False)

    def format(self, signature: Any, demos: list[dict[str, Any]], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        return format_messages(signature, demos, inputs)

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        try:
            return parse_output(signature, completion)
        except ConstraintViolation as e:
            raise AdapterParseError(adapter_name="MedprogAdapter", signature=signature, lm_response=completion,
                                    message=str(e)) from e

    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        lm_kwargs = constrained_kwargs(lm_kwargs, signature, inputs)
        name = signature.__name__ if current_step() == "main" else current_step()
        with step(name):
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)

    async def acall(self, lm, lm_kwargs, signature, demos, inputs):
        lm_kwargs = constrained_kwargs(lm_kwargs, signature, inputs)
        return await super().acall(lm, lm_kwargs, signature, demos, inputs)
