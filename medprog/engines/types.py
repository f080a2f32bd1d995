"""Output types medprog can constrain, and the `Signature` base that checks them.

An output field may be a pydantic model, a `Literal` of strings, `bool`/`int`/`float`/`str`,
a `list` of any of these, or `TaggedText[...]`. Anything else (``dict``, ``Any``, an
arbitrary class) cannot be turned into a decoding constraint, so declaring it is an error
that names the field.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

import dspy
from pydantic import BaseModel
from pydantic_core import core_schema


class TaggedText(str):
    """The input field ``source`` rewritten verbatim with balanced inline XML tags.

    Parameterise it with the source field and the tag set: ``TaggedText["note", ("a", "b")]``.
    Tags sit only between words; spans of different tags may overlap, a tag never nests in
    itself, and no span is empty. The value is the tagged string.
    """

    source: typing.ClassVar[str | None] = None
    tags: typing.ClassVar[tuple[str, ...]] = ()

    def __class_getitem__(cls, params: tuple[str, tuple[str, ...] | list[str]]) -> type[TaggedText]:
        source, tags = params
        tags = tuple(tags)
        if not tags or not all(isinstance(t, str) and t.isidentifier() for t in tags):
            raise TypeError(f"TaggedText tags must be a non-empty sequence of identifiers, got {tags!r}")
        name = f"TaggedText[{source!r}, {len(tags)} tags]"
        return type(name, (TaggedText,), {"source": source, "tags": tags, "__module__": __name__})

    @classmethod
    def __get_pydantic_core_schema__(cls, source_type: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema())


def is_tagged(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, TaggedText) and annotation.source is not None


def is_literal(annotation: Any) -> bool:
    return get_origin(annotation) is Literal


def constrainable_problem(annotation: Any) -> str | None:
    """Why ``annotation`` cannot be constrained, or None if it can."""
    if get_origin(annotation) is typing.Annotated:  # bounds and descriptions on a constrainable type
        return constrainable_problem(get_args(annotation)[0])
    if annotation in (str, int, float, bool) or is_tagged(annotation):
        return None
    if is_literal(annotation):
        if all(isinstance(a, (str, int, bool)) for a in get_args(annotation)):
            return None
        return "Literal values must be str, int or bool"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, f in annotation.model_fields.items():
            problem = constrainable_problem(f.annotation)
            if problem:
                return f"{annotation.__name__}.{name}: {problem}"
        return None
    origin = get_origin(annotation)
    if origin in (list, typing.List):
        (item,) = get_args(annotation) or (None,)
        if item is None:
            return "a list needs an item type"
        if is_tagged(item):
            return "TaggedText cannot be a list item"
        return constrainable_problem(item)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return constrainable_problem(args[0])
    return f"type {annotation!r} has no decoding constraint (use a pydantic model, Literal, list, or TaggedText)"


class UnconstrainableOutputError(TypeError):
    """An output field whose type medprog cannot turn into a decoding constraint."""


def check_signature(sig: type[dspy.Signature]) -> None:
    """Raise `UnconstrainableOutputError` naming the first output field that cannot be constrained."""
    outputs = sig.output_fields
    for name, f in outputs.items():
        problem = constrainable_problem(f.annotation)
        if problem:
            raise UnconstrainableOutputError(f"{sig.__name__}.{name}: {problem}")
        if is_tagged(f.annotation):
            if f.annotation.source not in sig.input_fields:
                raise UnconstrainableOutputError(
                    f"{sig.__name__}.{name}: TaggedText source field {f.annotation.source!r} is not an input field"
                )
            if len(outputs) != 1:
                raise UnconstrainableOutputError(f"{sig.__name__}.{name}: a TaggedText output must be the only output")
