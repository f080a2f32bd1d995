"""Compile strategies, by name: prompt (bootstrap, random-search, mipro, gepa), weights
(dft, grpo, pseudolabel) and ensemble. Each is ``fn(CompileRequest) -> Path`` (the
artifact directory), imported only when asked for.

Where things live: the request and its run settings (`request`); the one ``-o`` parser
(`config`) and each strategy's typed config (`dft_config`, `grpo_config`, `prompt_config`,
`PseudolabelConfig`, `EnsembleConfig`); budgets and best-so-far (`budget`); the prompt
optimizers' session (`base`, `prompt`); the weights pipeline (`weights`) with DFT's rows and
batches (`batches`, `training_data`), losses (`losses`) and training loop (`dft_train`);
Span-Cluster Consensus (`ensemble`, `ensemble_compile`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from medprog.optimizers.base import CompileRequest

OPTIMIZERS: dict[str, str] = {
    "bootstrap": "medprog.optimizers.prompt:bootstrap",
    "random-search": "medprog.optimizers.prompt:random_search",
    "mipro": "medprog.optimizers.prompt:mipro",
    "gepa": "medprog.optimizers.prompt:gepa",
    "dft": "medprog.optimizers.dft:compile_dft",
    "grpo": "medprog.optimizers.grpo:compile_grpo",
    "pseudolabel": "medprog.optimizers.pseudolabel:compile_pseudolabel",
    "ensemble": "medprog.optimizers.ensemble_compile:compile_ensemble",
}


class UnknownOptimizerError(KeyError):
    def __str__(self) -> str:
        name, why = self.args if len(self.args) == 2 else (self.args[0], None)
        if why:
            return f"optimizer {name!r} is not available: {why}"
        return f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}"


def get_optimizer(name: str) -> Callable[[CompileRequest], Path]:
    """The compile function registered as ``name`` (imported on first use)."""
    if name not in OPTIMIZERS:
        raise UnknownOptimizerError(name)
    module, _, attr = OPTIMIZERS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module or module.startswith(e.name + ".")):
            raise UnknownOptimizerError(name, f"{module} is not installed in this build") from None
        raise UnknownOptimizerError(name, f"it needs {e.name!r} (install medprog[train])") from None
    except AttributeError:
        raise UnknownOptimizerError(name, f"{module} has no {attr}") from None


__all__ = ["OPTIMIZERS", "UnknownOptimizerError", "get_optimizer"]
