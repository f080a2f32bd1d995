"""The program registry: name → program class, data loader, metric, default settings.

Each program module defines ``PROGRAM = declare(__name__, ...)`` (its ``load``, ``to_record``,
``metrics``, ``score`` and optional hooks are picked up by name); the registry imports a module
only when its program is asked for, so ``medprog programs`` stays fast. What generic code needs
to know about a program (what GRPO rewards, what an ensemble reads) is declared here as
capability fields, so no optimizer or artifact code tests a program's name.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

Record = dict[str, Any]
Spans = dict[str, list[tuple[int, int, int]]]


@dataclass(frozen=True)
class EnsembleInputs:
    """What a span ensemble reads from a program: each member's evaluation file and the gold notes."""

    submission: str
    """The file an evaluation writes beside its records: ``{note id: [(start, end, category)]}``."""
    read: Callable[[Path], Spans]
    """Reads a ``submission`` file."""
    write: Callable[[Path, Spans], None]
    """Writes combined spans in the same format."""
    gold: Callable[[list[dspy.Example]], list[Any]]
    """The gold notes the ensemble is tuned on (`medprog.data.meddec.MedDecNote`), from examples."""


@dataclass(frozen=True)
class ProgramInfo:
    """Everything the CLI, the optimizers and the evaluator need to know about one program.

    - ``build(**settings)`` returns a fresh `dspy.Module`.
    - ``load(path, split)`` returns `dspy.Example`s with inputs set and an ``id`` field.
    - ``to_record(example, prediction)`` is the JSON-ready prediction written per example.
    - ``metrics(examples, records)`` computes the official aggregate metrics from records
      (so an interrupted evaluation can be re-scored from its predictions file).
    - ``score(example, prediction)`` is the per-example metric that drives optimizers.
    """

    name: str
    task: str
    metric: str
    build: Callable[..., dspy.Module]
    load: Callable[[str | Path, str | None], list[dspy.Example]]
    to_record: Callable[[dspy.Example, Any], Record]
    metrics: Callable[[list[dspy.Example], list[Record]], dict[str, Any]]
    score: Callable[[dspy.Example, Any], float]
    defaults: dict[str, Any] = field(default_factory=dict)
    version: str = "1"
    extras: Callable[[Path, list[dspy.Example], list[Record], dict[str, Any]], None] | None = None
    """Optional: write task-specific files (e.g. an official submission) beside an evaluation."""
    report_notes: Callable[[list[dspy.Example], list[Record]], dict[str, Any]] | None = None
    """Optional: the notes ``report.html`` shows with gold and predicted spans (the shape of
    `medprog.report_spans.NotesView`), for span-tagging programs."""
    train_examples: Callable[[list[dspy.Example], dict[str, Any]], list[dspy.Example]] | None = None
    """Optional: the examples weight optimizers train the predictor on, from program-level examples
    and build settings (the tagger's windows); by default the examples themselves."""
    fit_settings: Callable[[list[dspy.Example], dict[str, Any]], dict[str, Any]] | None = None
    """Optional: build settings learnt from the training examples when a program is compiled (the
    tagger's constraint limits); they override the defaults, never settings the user gave."""
    reward_metrics: tuple[str, ...] = ()
    """Keys of ``metrics`` over one example that GRPO rewards each completion with (several are
    aggregated); empty: the per-example ``score``."""
    ensemble: EnsembleInputs | None = None
    """Set for programs whose outputs a Span-Cluster Consensus ensemble can combine."""
    ref: str | None = None
    """How an artifact names the program when it is not registered: ``package.module:ATTR``."""


HOOKS = ("extras", "report_notes", "train_examples", "fit_settings")


def declare(module: str, *, name: str, task: str, metric: str, build: Callable[..., dspy.Module],
            **fields: Any) -> ProgramInfo:
    """The `ProgramInfo` of a program module (call as ``PROGRAM = declare(__name__, ...)``).

    Takes the module's ``load``, ``to_record``, ``metrics`` and ``score`` and whichever optional
    hooks (``extras``, ``report_notes``, ``train_examples``) it defines, unless ``fields`` names
    them (a program reusing another's data and metric); ``fields`` sets the rest.
    """
    mod = sys.modules[module]
    parts = {k: getattr(mod, k) for k in ("load", "to_record", "metrics", "score") if k not in fields}
    hooks = {k: getattr(mod, k) for k in HOOKS if k not in fields and callable(getattr(mod, k, None))}
    return ProgramInfo(name=name, task=task, metric=metric, build=build, ref=f"{module}:PROGRAM",
                       **parts, **hooks, **fields)



_MODULES = {
    "tagger": "medprog.programs.tagger",
    "mdagents": "medprog.programs.mdagents",
    "mcq": "medprog.programs.mcq",
    "hospital": "medprog.programs.hospital",
    "clh": "medprog.programs.clh",
    "creason": "medprog.programs.creason",
}


class UnknownProgramError(KeyError):
    def __str__(self) -> str:
        return f"unknown program {self.args[0]!r}; known: {', '.join(available())}"


def available() -> list[str]:
    """Registered program names whose module is present."""
    return [n for n, m in _MODULES.items() if importlib.util.find_spec(m) is not None]


def registered_name(info: ProgramInfo) -> str | None:
    """The name ``info`` is registered under, or None for a program defined elsewhere."""
    module = _MODULES.get(info.name)
    if module is None or module not in sys.modules:
        return None
    return info.name if getattr(sys.modules[module], "PROGRAM", None) is info else None


def program_ref(info: ProgramInfo) -> str | None:
    """How an artifact names a program: its registry name, its declared ``module:ATTR``, or the module
    attribute holding it; None when nothing names it."""
    name = registered_name(info)
    if name or info.ref:
        return name or info.ref
    for fn in (info.build, info.load, info.score):
        mod = sys.modules.get(getattr(fn, "__module__", "") or "")
        for attr, value in vars(mod or object).items():
            if value is info:
                return f"{getattr(mod, '__name__', '')}:{attr}"
    return None


def resolve_program(ref: str) -> ProgramInfo:
    """A `ProgramInfo` from a registry name or a ``package.module:ATTR`` import path."""
    if ":" not in ref:
        return get_program(ref)
    mod_name, _, attr = ref.partition(":")
    try:
        info = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise UnknownProgramError(ref) from e
    return info if getattr(info, "ref", ref) == ref else dataclasses.replace(info, ref=ref)


def get_program(name: str) -> ProgramInfo:
    if name not in _MODULES or importlib.util.find_spec(_MODULES[name]) is None:
        raise UnknownProgramError(name)
    return importlib.import_module(_MODULES[name]).PROGRAM
