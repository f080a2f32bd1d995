"""The program registry: name → program class, data loader, metric, default settings.

Each program module defines ``PROGRAM = ProgramInfo(...)``; the registry imports a
module only when its program is asked for, so ``medprog programs`` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

Record = dict[str, Any]


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


def get_program(name: str) -> ProgramInfo:
    if name not in _MODULES or importlib.util.find_spec(_MODULES[name]) is None:
        raise UnknownProgramError(name)
    return importlib.import_module(_MODULES[name]).PROGRAM
