"""The one parser from ``-o KEY=VALUE`` / TOML ``[options]`` to an optimizer's typed config.

Each optimizer declares a dataclass (``DFTConfig``, ``GRPOConfig``, …) whose fields carry a
``help`` string in their metadata and whose ``__post_init__`` validates them. `parse_options`
checks each key against the fields (an unknown key is an error that names the valid ones: a
typo must never train with the default), converts each value to the field's type with pydantic
(``"12"`` for an int, ``"false"`` for a bool, a ``Literal``'s choices), and builds the config.
Fields with ``metadata={"option": False}`` are set by the optimizer, never by ``-o``.

`split_options` separates the keys of a run (`RunSettings`) and the program's ``settings`` from
the optimizer's own keys, so ``-o dev_limit=2`` and ``-o settings='{...}'`` keep working.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from medprog.optimizers.request import CompileError, RunSettings

T = TypeVar("T")


class OptionError(CompileError):
    """An ``-o`` option the optimizer does not have, or a value of the wrong type."""


def option_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of a config dataclass that ``-o`` may set."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init and f.metadata.get("option", True)}


def describe_options(cls: type) -> list[tuple[str, Any, str]]:
    """``(name, default, help)`` of each settable field, for documentation and errors."""
    out = []
    for name, f in option_fields(cls).items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        out.append((name, default, str(f.metadata.get("help", ""))))
    return out


def parse_options(cls: type[T], options: Mapping[str, Any], *, optimizer: str, **fixed: Any) -> T:
    """``cls(**fixed, **options)`` with every key checked and every value converted to its field's type."""
    fields = option_fields(cls)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise OptionError(f"unknown option {unknown[0]!r} for the {optimizer} optimizer; "
                          f"valid options: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, raw in options.items():
        try:
            values[key] = TypeAdapter(hints[key]).validate_python(raw)
        except ValidationError as e:
            first = e.errors()[0]
            raise OptionError(f"option {key!r} of the {optimizer} optimizer: {first['msg'].lower()} "
                              f"(got {raw!r}; default {describe_default(fields[key])})") from None
    try:
        return cls(**fixed, **values)
    except (TypeError, ValueError) as e:
        if isinstance(e, CompileError):
            raise
        raise OptionError(f"{optimizer} optimizer: {e}") from None


def describe_default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    return "computed"


RUN_KEYS = frozenset(f.name for f in dataclasses.fields(RunSettings))
REQUEST_KEYS = frozenset({"settings"})


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(run settings, request fields, optimizer options)`` from one ``-o`` / ``[options]`` mapping."""
    run = {k: v for k, v in options.items() if k in RUN_KEYS}
    request = {k: v for k, v in options.items() if k in REQUEST_KEYS}
    rest = {k: v for k, v in options.items() if k not in RUN_KEYS and k not in REQUEST_KEYS}
    if "settings" in request and not isinstance(request["settings"], dict):
        raise OptionError(f"option 'settings' must be a JSON object of program settings, got {request['settings']!r}")
    return run, request, rest


def run_settings(values: Mapping[str, Any]) -> RunSettings:
    """`RunSettings` from the given keys (None means: the default), each converted to its type."""
    given = {k: v for k, v in values.items() if v is not None}
    return parse_options(RunSettings, given, optimizer="compile")


def config_help(cls: type) -> str:
    """One line per option: ``name (default): help`` (for error messages and ``--help`` text)."""
    return "\n".join(f"{n} ({d!r}): {h}" for n, d, h in describe_options(cls))


__all__ = ["OptionError", "RUN_KEYS", "config_help", "describe_options", "option_fields", "parse_options",
           "run_settings", "split_options"]
