"""What a compile is asked to do: the request, the run settings it runs under, its error type.

Every optimizer is ``fn(req: CompileRequest) -> Path``. The request separates three things that
used to share one dict: the optimizer's own knobs (``options``, raw ``-o`` / ``[options]`` values,
parsed by the optimizer into its typed config with `medprog.optimizers.config.parse_options`),
how the run behaves (`RunSettings`, frozen), and what the program is built from (``settings``,
``base``, ``members``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from medprog.engines.base import DEFAULT_MAX_TOKENS
from medprog.programs.registry import ProgramInfo


class CompileError(ValueError):
    """A compile that cannot run as asked (missing data, missing --lm, bad option); the CLI exits 2."""


@dataclass(frozen=True)
class RunSettings:
    """How a compile runs, whatever the optimizer: set by the CLI flags (or ``-o`` / the config file)."""

    allow_remote: bool = False
    """Allow an ``openai:`` endpoint off this machine's network (``--allow-remote``)."""
    no_cache: bool = False
    """Neither read nor write the request cache (``--no-cache``)."""
    cache_dir: Path | None = None
    """Request cache directory; None uses the user cache."""
    max_tokens: int = DEFAULT_MAX_TOKENS
    """Completion token limit per model call (``--max-tokens``)."""
    threads: int | None = None
    """Examples in flight at once (``--threads``); None: 8 for an engine that takes concurrent calls, else 1."""
    dev_limit: int | None = None
    """Score only the first N dev examples for the report (``-o dev_limit=N``)."""
    progress: bool = False
    """Show progress bars (the CLI turns them on)."""

    def __post_init__(self) -> None:
        for name in ("max_tokens", "threads", "dev_limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise CompileError(f"run setting {name!r} must be a positive integer, got {value!r}")
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    def dev_examples(self, dev: list[Any]) -> list[Any]:
        """The dev examples the report scores (the first ``dev_limit``)."""
        return dev if self.dev_limit is None else dev[: self.dev_limit]


@dataclass
class CompileRequest:
    """One ``medprog compile`` invocation.

    ``options`` holds only the optimizer's knobs; ``settings`` the program's build kwargs (default
    ``program.defaults``); ``base`` a model directory, artifact or model name to start from (weight
    optimizers) and ``members`` the eval outputs an ensemble combines. From Python, ``engine`` /
    ``teacher_engine`` may hold already-open engines to use instead of opening ``lm`` / ``teacher``.
    """

    program: ProgramInfo
    train: list[dspy.Example]
    dev: list[dspy.Example]
    lm: str | None
    teacher: str | None
    out: Path
    budget_calls: int | None = None
    budget_tokens: int | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    run: RunSettings = field(default_factory=RunSettings)
    settings: dict[str, Any] | None = None
    base: str | None = None
    members: list[Path] = field(default_factory=list)
    engine: Any = None
    teacher_engine: Any = None

    def program_settings(self) -> dict[str, Any]:
        """The program's build kwargs: its defaults updated with ``settings``."""
        return {**self.program.defaults, **(self.settings or {})}
