"""Degenerate content: free-text fields a model filled with nothing that says anything.

Under a JSON constraint a small model can satisfy the schema with ``"A"`` in every string:
valid, and meaningless. `degenerate_strings` walks one JSON output against its schema and
flags the free-text strings (no ``enum``/``const``/``pattern``) that are at most one character
long, an option letter, a verbatim copy of an option's text, or mostly (half or more, and at
least 30 characters) one verbatim stretch of the question.
"""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Any

from pydantic import BaseModel


class ContentCheck(BaseModel):
    """Free-text strings found in one output, and the degenerate ones (``path: text``)."""

    n_fields: int = 0
    degenerate: list[str] = []


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    return schema


def _free_text(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "string" and not ({"enum", "const", "pattern"} & set(schema))


COPY_MIN_CHARS = 30


def why_degenerate(text: str, options: dict[str, str], question: str = "") -> str | None:
    """``"short"``, ``"letter"``, ``"option"`` or ``"question"`` when ``text`` carries no content of its own."""
    t = text.strip().strip(".:)(").strip()
    if len(t) <= 1:
        return "short"
    if t.upper() in {k.upper() for k in options}:
        return "letter"
    if t.casefold() in {v.strip().casefold() for v in options.values()}:
        return "option"
    if len(t) >= COPY_MIN_CHARS and question:
        m = SequenceMatcher(None, t, question, autojunk=False).find_longest_match(0, len(t), 0, len(question))
        if m.size >= max(COPY_MIN_CHARS, len(t) / 2):
            return "question"
    return None


def degenerate_strings(value: Any, schema: dict[str, Any], options: dict[str, str], question: str = "",
                       root: dict[str, Any] | None = None, path: str = "$") -> ContentCheck:
    """Count the free-text strings in ``value`` (a parsed JSON output) and list the degenerate ones."""
    root = root or schema
    schema = _resolve(schema, root)
    out = ContentCheck()
    for key in ("anyOf", "oneOf"):
        if key in schema:  # optional fields: check against the first non-null alternative
            subs = [_resolve(s, root) for s in schema[key] if _resolve(s, root).get("type") != "null"]
            if subs and value is not None:
                return degenerate_strings(value, subs[0], options, question, root, path)
            return out
    if isinstance(value, str) and _free_text(schema):
        reason = why_degenerate(value, options, question)
        return ContentCheck(n_fields=1, degenerate=[f"{path}: {value!r} ({reason})"] if reason else [])
    parts: list[ContentCheck] = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        parts = [degenerate_strings(v, props[k], options, question, root, f"{path}.{k}")
                 for k, v in value.items() if k in props]
    elif isinstance(value, list):
        items = schema.get("items", {})
        parts = [degenerate_strings(v, items, options, question, root, f"{path}[{i}]") for i, v in enumerate(value)]
    for p in parts:
        out.n_fields += p.n_fields
        out.degenerate.extend(p.degenerate)
    return out
