"""medprog: typed, constrained prompt programs for clinical language tasks.

Importing the package is light (no torch, no dspy); `load` imports what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from medprog.artifact import Artifact

__all__ = ["load"]


def load(path: str | Path) -> Artifact:
    """Load a compiled artifact directory as a runnable program.

    ``medprog.load(DIR)(note=...)`` runs it with the artifact's own model (or the active
    ``dspy.settings.lm``); ``.module`` is the rebuilt `dspy.Module`. Never unpickles.
    """
    from medprog.artifact import load_artifact

    return load_artifact(path)
