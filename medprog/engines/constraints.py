"""Decoding constraints derived from a signature's output fields.

One constraint object per call, rendered for whichever backend generates:

- `JsonConstraint`: a JSON schema (objects closed with ``additionalProperties: false``);
  used when a signature has several output fields or a structured one.
- `ChoiceConstraint`: exactly one of a few strings (a lone `Literal` output).
- `TaggedConstraint`: the source text copied verbatim with balanced tags (a lone
  `TaggedText` output); per input, since the text is the input.

What the model writes for a signature (`output_text`) and how it is read back
(`parse_output`) live here too, so the adapter, the engines and the trainers agree.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, Union, get_args

import pydantic
from pydantic import BaseModel, Field, create_model

from medprog.engines.tagging import TaggedParseError, TagLimits, parse_tagged, word_layout
from medprog.engines.types import TaggedText, is_literal, is_tagged


class ConstraintViolation(ValueError):
    """Generated text that does not satisfy its constraint."""


class JsonConstraint(BaseModel):
    kind: Literal["json"] = "json"
    json_schema: dict[str, Any]


class ChoiceConstraint(BaseModel):
    kind: Literal["choice"] = "choice"
    choices: list[str]


class TaggedConstraint(BaseModel):
    kind: Literal["tagged"] = "tagged"
    text: str
    tags: list[str]
    limits: TagLimits | None = None
    """Bounds on the spans (e.g. derived from a program's training annotations); None: no bounds."""


Constraint = Annotated[Union[JsonConstraint, ChoiceConstraint, TaggedConstraint], Field(discriminator="kind")]
_ADAPTER = pydantic.TypeAdapter(Constraint)
RESPONSE_FORMAT_NAME = "medprog_constraint"


MAX_STRING_CHARS = 400
"""Free-text string fields get this ``maxLength`` unless they declare one, so a weak model
cannot run a string to the token limit."""
MAX_LIST_ITEMS = 12
"""Lists get this ``maxItems`` unless they declare one, for the same reason."""


def _close_objects(schema: Any, max_chars: int | None = None) -> Any:
    """Close every object (``additionalProperties: false``, all keys required) and bound free strings."""
    max_chars = MAX_STRING_CHARS if max_chars is None else max_chars
    if isinstance(schema, dict):
        schema = {k: _close_objects(v, max_chars) for k, v in schema.items()}
        if schema.get("type") == "string" and not ({"enum", "const", "pattern", "maxLength"} & set(schema)):
            schema["maxLength"] = max(max_chars, schema.get("minLength", 0))
        if schema.get("type") == "array" and "maxItems" not in schema:
            schema["maxItems"] = max(MAX_LIST_ITEMS, schema.get("minItems", 0))
        if schema.get("type") == "object" and "properties" in schema:
            schema["additionalProperties"] = False
            schema["required"] = list(schema["properties"])
        return schema
    if isinstance(schema, list):
        return [_close_objects(v, max_chars) for v in schema]
    return schema


def _field_type(name: str, f: Any) -> Any:
    """An output field's type with its bounds (``min_length`` ...) and its description, if it has one."""
    desc = (f.json_schema_extra or {}).get("desc")
    extra = [Field(description=desc)] if desc and desc != f"${{{name}}}" else []
    return Annotated[(f.annotation, *f.metadata, *extra)] if f.metadata or extra else f.annotation


def output_model(signature: Any) -> type[BaseModel]:
    """A pydantic model with one field per output field of ``signature`` (bounds and descriptions kept)."""
    fields = {name: (_field_type(name, f), ...) for name, f in signature.output_fields.items()}
    return create_model(f"{signature.__name__}Output", **fields)  # type: ignore[call-overload]


def output_mode(signature: Any) -> str:
    """``tagged`` or ``choice`` for a lone TaggedText / Literal output, else ``json``."""
    outs = list(signature.output_fields.values())
    if len(outs) == 1 and is_tagged(outs[0].annotation):
        return "tagged"
    if len(outs) == 1 and is_literal(outs[0].annotation):
        return "choice"
    return "json"


def constraint_for(signature: Any, inputs: dict[str, Any], tag_limits: TagLimits | None = None) -> Constraint:
    """The constraint for one call of ``signature`` on ``inputs`` (``tag_limits`` bound a tagged output)."""
    mode = output_mode(signature)
    (name, field), *_ = signature.output_fields.items()
    if mode == "tagged":
        ann: type[TaggedText] = field.annotation
        if ann.source not in inputs:
            raise KeyError(f"{signature.__name__}: input {ann.source!r} (the TaggedText source) is missing")
        return TaggedConstraint(text=str(inputs[ann.source]), tags=list(ann.tags), limits=tag_limits)
    if mode == "choice":
        return ChoiceConstraint(choices=[str(a) for a in get_args(field.annotation)])
    schema = output_model(signature).model_json_schema()
    return JsonConstraint(json_schema=_close_objects(schema))


def to_response_format(c: Constraint) -> dict[str, Any]:
    """Carry a constraint through dspy's LM layer as a ``response_format`` (part of the cache key)."""
    return {"type": "json_schema", "json_schema": {"name": RESPONSE_FORMAT_NAME, "schema": c.model_dump()}}


def from_response_format(rf: dict[str, Any] | None) -> Constraint | None:
    """Inverse of `to_response_format`; a plain JSON-schema response_format becomes a `JsonConstraint`."""
    if not rf or rf.get("type") != "json_schema":
        return None
    body = rf.get("json_schema", rf)
    schema = body.get("schema")
    if body.get("name") == RESPONSE_FORMAT_NAME:
        return _ADAPTER.validate_python(schema)
    return JsonConstraint(json_schema=schema) if schema is not None else None


def parse_output(signature: Any, text: str) -> dict[str, Any]:
    """Read a completion back into typed output values; raises `ConstraintViolation`."""
    mode = output_mode(signature)
    (name, field), *_ = signature.output_fields.items()
    if mode == "tagged":
        ann = field.annotation
        try:
            parse_tagged(text, list(ann.tags))
        except TaggedParseError as e:
            raise ConstraintViolation(f"{name}: {e}") from e
        return {name: ann(text)}
    if mode == "choice":
        choices = [str(a) for a in get_args(field.annotation)]
        if text.strip() not in choices:
            raise ConstraintViolation(f"{name}: {text!r} is not one of {choices}")
        value = next(a for a in get_args(field.annotation) if str(a) == text.strip())
        return {name: value}
    try:
        obj = output_model(signature).model_validate_json(text)
    except pydantic.ValidationError as e:
        raise ConstraintViolation(f"output does not match {signature.__name__}'s schema: {e}") from e
    return {k: getattr(obj, k) for k in signature.output_fields}


def output_text(signature: Any, values: dict[str, Any]) -> str:
    """What the model should write for these output values (demos and training targets)."""
    mode = output_mode(signature)
    (name, _), *_ = signature.output_fields.items()
    if mode in ("tagged", "choice"):
        return str(values[name])
    obj = output_model(signature).model_validate({k: values[k] for k in signature.output_fields})
    return obj.model_dump_json()


def check_text(c: Constraint, text: str) -> None:
    """Raise `ConstraintViolation` unless ``text`` satisfies ``c`` (used on server replies)."""
    if isinstance(c, ChoiceConstraint):
        if text not in c.choices:
            raise ConstraintViolation(f"{text!r} is not one of {c.choices}")
    elif isinstance(c, JsonConstraint):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConstraintViolation(f"not JSON: {e}") from e
        _check_schema(value, c.json_schema, c.json_schema, "$")
    else:
        try:
            plain, _ = parse_tagged(text, c.tags)
        except TaggedParseError as e:
            raise ConstraintViolation(str(e)) from e
        if plain != c.text:
            at = next((i for i, (a, b) in enumerate(zip(plain, c.text)) if a != b), min(len(plain), len(c.text)))
            raise ConstraintViolation(f"tagged text does not copy the source (first difference at character {at})")


def _check_schema(value: Any, schema: dict, root: dict, path: str) -> None:
    """A small JSON-schema check covering what `constraint_for` emits."""
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[-1]
        return _check_schema(value, root["$defs"][ref], root, path)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            errors = []
            for sub in schema[key]:
                try:
                    return _check_schema(value, sub, root, path)
                except ConstraintViolation as e:
                    errors.append(str(e))
            raise ConstraintViolation(f"{path}: matches no alternative ({'; '.join(errors)})")
    if "enum" in schema and value not in schema["enum"]:
        raise ConstraintViolation(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
        raise ConstraintViolation(f"{path}: string longer than {schema['maxLength']} characters")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        raise ConstraintViolation(f"{path}: string shorter than {schema['minLength']} characters")
    if "const" in schema and value != schema["const"]:
        raise ConstraintViolation(f"{path}: {value!r} != {schema['const']!r}")
    t = schema.get("type")
    types_ = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if t in types_ and not isinstance(value, types_[t]):
        raise ConstraintViolation(f"{path}: expected {t}, got {type(value).__name__}")
    if t in ("integer", "number") and (isinstance(value, bool) or not isinstance(value, (int, float))
                                       or (t == "integer" and not float(value).is_integer())):
        raise ConstraintViolation(f"{path}: expected {t}, got {value!r}")
    if t == "object":
        props = schema.get("properties", {})
        extra = set(value) - set(props)
        if extra and schema.get("additionalProperties") is False:
            raise ConstraintViolation(f"{path}: unexpected key(s) {sorted(extra)}")
        for k in schema.get("required", []):
            if k not in value:
                raise ConstraintViolation(f"{path}: missing key {k!r}")
        for k, v in value.items():
            if k in props:
                _check_schema(v, props[k], root, f"{path}.{k}")
    if t == "array":
        if len(value) > schema.get("maxItems", len(value)):
            raise ConstraintViolation(f"{path}: more than {schema['maxItems']} items")
        for i, v in enumerate(value):
            _check_schema(v, schema.get("items", {}), root, f"{path}[{i}]")


def tagged_regex(c: TaggedConstraint) -> str:
    """A regex admitting the exact text with optional tags at word boundaries.

    Grammar engines and servers get this; it cannot force tags to balance, so a reply is
    still checked with `check_text`. Of the constraint's limits only ``max_opens_per_position``
    (and as many closes) can be written in a regex; local decoding uses medprog's own processor,
    which keeps them all.
    """
    layout = word_layout(c.text)
    opens, closes = layout.open_positions, layout.close_positions
    alt_open = "|".join(f"<{t}>" for t in c.tags)
    alt_close = "|".join(f"</{t}>" for t in c.tags)
    cap = c.limits.max_opens_per_position if c.limits else None
    rep = f"{{0,{cap}}}" if cap else "*"
    out = []
    for i, ch in enumerate(c.text + "\0"):
        if i in closes:
            out.append(f"(?:{alt_close}){rep}")
        if i in opens:
            out.append(f"(?:{alt_open}){rep}")
        if i < len(c.text):
            out.append(re.escape(ch))
    return "".join(out)


def json_whitespace_free(schema: dict[str, Any]) -> str:
    """The schema serialised compactly (backends take a JSON string)."""
    return json.dumps(schema, separators=(",", ":"))
