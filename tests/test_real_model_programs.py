"""The five programs end to end from the CLI on the real pretrained SmolLM2 (slow, a few examples).

Each program gets seeded synthetic data in its task's format (`medprog data synth`), is evaluated
with `medprog eval --lm local:smollm2` on one or two examples, and every line of its
predictions.jsonl must hold a record that parses into the program's output types, with no
per-example error. A 135M model gives no clinical skill; this checks the mechanics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medprog.cli import app
from medprog.data.icd_notes import SYNTH_CODES
from medprog.engines.tagging import parse_tagged, strip_tags
from medprog.programs.icd_index import is_billable
from medprog.programs.registry import get_program
from medprog.programs.tagger import TAG_TO_CATEGORY
from medprog.signatures.hospital import DiagnosisReport

pytestmark = pytest.mark.slow
runner = CliRunner()

Check = Callable[[dict[str, Any], Any], None]


def check_tagger(rec: dict[str, Any], example: Any) -> None:
    """The tagged note is the note exactly, with balanced non-empty tags of the decision categories."""
    assert strip_tags(rec["tagged"]) == example.note
    text, spans = parse_tagged(rec["tagged"], list(TAG_TO_CATEGORY))
    assert text == example.note and all(s.end > s.start for s in spans)
    assert rec["predictions"] == [[s.start, s.end, TAG_TO_CATEGORY[s.tag]] for s in spans]


def check_letter(rec: dict[str, Any], example: Any) -> None:
    """One of the question's own option letters (a reasoning, where given, is text)."""
    assert rec["answer"] in example.options
    assert rec.get("reasoning") is None or isinstance(rec["reasoning"], str)


def check_clh(rec: dict[str, Any], example: Any) -> None:
    """Billable ICD-10-CM codes inside the index's scope; each stage keeps a subset of the one before."""
    assert isinstance(rec["codes"], list) and all(isinstance(c, str) and is_billable(c) for c in rec["codes"])
    assert {c[:3] for c in rec["codes"] + rec["located"]} <= set(SCOPE.split(","))
    assert set(rec["assigned"]) <= set(rec["verified"]) <= set(rec["located"])


def check_hospital(rec: dict[str, Any], example: Any) -> None:
    """A structured diagnosis report after a consultation that really took turns."""
    report = DiagnosisReport.model_validate(rec["report"])
    assert rec["diagnoses"] == report.diagnoses
    assert rec["dialogue"], "the consultation has at least one turn"


SCOPE = ",".join(sorted({c[:3] for c in SYNTH_CODES}))

# program: (synthetic dataset, eval options, record check)
CASES: dict[str, tuple[str, list[str], Check]] = {
    "tagger": ("meddec", ["--limit", "1"], check_tagger),
    "creason": ("registry", ["--limit", "2"], check_letter),
    "mdagents": ("medqa", ["--limit", "1", "-o", "mode=basic", "-o", "n_experts=2"], check_letter),
    "clh": ("icd", ["--limit", "1", "-o", f"scope={SCOPE}", "-o", "top_k=3", "-o", "max_terms=3"], check_clh),
    "hospital": ("hospital", ["--limit", "1", "-o", "max_turns=2"], check_hospital),
}


def invoke(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("program", list(CASES))
def test_program_runs_end_to_end_on_smollm2(program: str, smollm2_dir: Path, tmp_path: Path) -> None:
    dataset, options, check = CASES[program]
    data, out = tmp_path / dataset, tmp_path / "eval"
    made = invoke("data", "synth", dataset, "--out", data, "--n", 10, "--seed", 0)
    assert made.exit_code == 0, made.output
    ran = invoke("eval", program, "--data", data, "--split", "test", "--lm", "local:smollm2", "--out", out,
                 "--no-cache", "--no-progress", *options)
    assert ran.exit_code == 0, ran.output

    limit = int(options[options.index("--limit") + 1])
    examples = {str(e.id): e for e in get_program(program).load(data, "test")[:limit]}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(examples)
    for row in rows:
        assert row["error"] is None, f"{program} {row['id']}: {row['error']}"
        check(row["record"], examples[row["id"]])
        assert row["usage"]["total"]["calls"] >= 1
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n_ok"] == limit and summary["n_failed"] == 0
