"""The `medprog` command line (typer): the app, its sub-apps and where each command lives.

Known failures (bad spec, missing model, unreachable server, malformed input) print one
clear line and exit with code 2; anything else is a bug and keeps its traceback. The commands
are written in `cli_eval` (run, eval, compare), `cli_compile` (compile), `cli_data` (data,
scoring, MedDec baselines and ensembles) and `cli_models` (models); what they share is in
`cli_common`.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from medprog.cli_common import (  # noqa: E402  (re-exported: the CLI's helpers as before)
    UsageError,
    build_lm,
    build_program,
    cli_errors,
    console,
    describe_destination,
    read_json_file,
)
from medprog.cli_compile import compile_cmd, read_config  # noqa: E402
from medprog.cli_data import (  # noqa: E402
    SYNTHESIZERS,
    baseline_cmd,
    ensemble_apply_cmd,
    score_meddec_cmd,
    synth_cmd,
)
from medprog.cli_eval import compare_cmd, eval_cmd, run_cmd  # noqa: E402
from medprog.cli_models import models_app  # noqa: E402

__all__ = ["app", "main", "UsageError", "build_lm", "build_program", "cli_errors", "console",
           "describe_destination", "read_json_file", "read_config", "SYNTHESIZERS"]

app = typer.Typer(help="medprog: typed, constrained prompt programs for clinical language tasks.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Datasets: synthetic generators.", no_args_is_help=True)
score_app = typer.Typer(help="Score prediction files with a task's official metric.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(score_app, name="score")
app.add_typer(models_app, name="models")


@app.command("programs")
def programs_cmd() -> None:
    """List the registered programs: name, task, metric."""
    from medprog.programs import available, get_program

    table = Table("program", "task", "metric")
    for name in available():
        info = get_program(name)
        table.add_row(info.name, info.task, info.metric)
    Console().print(table)


app.command("run")(run_cmd)
app.command("compile")(compile_cmd)
app.command("eval")(eval_cmd)
app.command("compare")(compare_cmd)
data_app.command("synth")(synth_cmd)
score_app.command("meddec")(score_meddec_cmd)
app.command("baseline")(baseline_cmd)
app.command("ensemble-apply")(ensemble_apply_cmd)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
