"""Data in the forms users keep it: jsonl, parquet, CSV and `save_to_disk` directories load to the
same examples, and bad rows are one-line `file:row N` errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import pytest
from typer.testing import CliRunner

from medprog.cli import app
from medprog.data.icd_notes import IcdNotesFormatError, load_icd_notes
from medprog.data.medqa import MedQAFormatError, load_medqa
from medprog.data.rows import RowFormatError
from medprog.programs.creason import load as load_creason
from medprog.programs.mcq import PROGRAM

runner = CliRunner()
ROWS: list[dict[str, Any]] = [
    {
        "id": "q1",
        "question": "Chest pain and ST elevation. Diagnosis?",
        "options": {"A": "MI", "B": "GERD", "C": "Pericarditis", "D": "Panic"},
        "answer_idx": "A",
        "rationale": "x",
    },
    {
        "id": "q2",
        "question": "Fever and consolidation. Diagnosis?",
        "options": {"A": "Asthma", "B": "Pneumonia", "C": "PE", "D": "Sarcoid", "E": "TB"},
        "answer_idx": "B",
    },
    {
        "id": "q3",
        "question": "Is this hypothyroidism?",
        "options": {"A": "yes", "B": "no", "C": "maybe"},
        "answer_idx": "C",
    },
]


def as_csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """The documented CSV convention: one column per option letter, empty where a row has fewer."""
    return {"id": row["id"], "question": row["question"], **row["options"], "answer_idx": row["answer_idx"]}


def write_all(tmp_path: Path, rows: list[dict[str, Any]]) -> dict[str, Path]:
    paths = {
        "jsonl": tmp_path / "q.jsonl",
        "parquet": tmp_path / "q.parquet",
        "csv": tmp_path / "q.csv",
        "disk": tmp_path / "q_saved",
    }
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(rows).to_parquet(paths["parquet"])
    pd.DataFrame([as_csv_row(r) for r in rows]).to_csv(paths["csv"], index=False)
    datasets.Dataset.from_list(rows).save_to_disk(str(paths["disk"]))
    return paths


def test_the_same_questions_load_identically_from_every_format(tmp_path):
    paths = write_all(tmp_path, ROWS)
    loaded = {name: load_medqa(p) for name, p in paths.items()}
    assert [len(i.options) for i in loaded["jsonl"]] == [4, 5, 3]  # no null-padded options from columnar schemas
    for name, items in loaded.items():
        assert items == loaded["jsonl"], name
    examples = {name: [dict(e) for e in PROGRAM.load(p, None)] for name, p in paths.items()}
    assert all(e == examples["jsonl"] for e in examples.values())


def test_a_plain_directory_takes_the_split_in_any_format_and_a_saved_dict_by_split(tmp_path):
    (tmp_path / "d").mkdir()
    pd.DataFrame(ROWS[:2]).to_parquet(tmp_path / "d" / "dev.parquet")
    assert [i.id for i in load_medqa(tmp_path / "d", "dev")] == ["q1", "q2"]
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:1]), "test": datasets.Dataset.from_list(ROWS[1:])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert [i.id for i in load_medqa(tmp_path / "dd")] == ["q2", "q3"]
    assert [i.id for i in load_medqa(tmp_path / "dd", "train")] == ["q1"]
    with pytest.raises(RowFormatError, match="no split 'dev' in the saved dataset"):
        load_medqa(tmp_path / "dd", "dev")


def test_a_bad_row_in_a_table_names_file_and_row(tmp_path):
    bad = [*ROWS[:2], {**ROWS[2], "answer_idx": "E"}]
    paths = write_all(tmp_path, bad)
    for name in ("parquet", "csv"):
        with pytest.raises(MedQAFormatError, match=rf"q\.{name}:row 3: expected the gold letter"):
            load_medqa(paths[name])
    with pytest.raises(MedQAFormatError, match=r"q\.jsonl:3: expected the gold letter"):
        load_medqa(paths["jsonl"])


def test_unknown_suffix_names_the_accepted_formats(tmp_path):
    odd = tmp_path / "q.xlsx"
    odd.write_text("x")
    with pytest.raises(MedQAFormatError, match=r"unknown data format '\.xlsx'; expected one of: \.jsonl, .*parquet"):
        load_medqa(odd)


def test_coded_notes_from_parquet_and_csv_match_jsonl(tmp_path):
    rows = [
        {"id": "n1", "note": "Type 2 diabetes.", "targets": ["E11.9"]},
        {"id": "n2", "note": "Hypertension and diabetes.", "targets": ["I10", "E11.9"]},
    ]
    (tmp_path / "n.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "n.parquet")
    pd.DataFrame([{**r, "targets": ";".join(r["targets"])} for r in rows]).to_csv(tmp_path / "n.csv", index=False)
    gold = load_icd_notes(tmp_path / "n.jsonl")
    assert load_icd_notes(tmp_path / "n.parquet") == gold == load_icd_notes(tmp_path / "n.csv")
    pd.DataFrame([*rows, {"id": "n3", "note": None, "targets": []}]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(IcdNotesFormatError, match=r"bad\.parquet:row 3: expected an object with a string 'note'"):
        load_icd_notes(tmp_path / "bad.parquet")


def test_creason_tasks_from_parquet_match_jsonl(tmp_path):
    from medprog.data.synth_registry import synth_registry

    synth_registry(tmp_path / "reg", n=40, seed=0)
    examples = load_creason(tmp_path / "reg", "test")
    tasks = [{k: e[k] for k in ("id", "record", "question", "options", "answer", "variable", "kind")} for e in examples]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    pd.DataFrame(tasks).to_parquet(tmp_path / "t.parquet")
    assert [dict(e) for e in load_creason(tmp_path / "t.parquet")] == [
        dict(e) for e in load_creason(tmp_path / "t.jsonl")
    ]


def test_eval_mcq_takes_a_parquet_file_and_reports_a_bad_row_in_one_line(tmp_path, monkeypatch):
    from programs_fixtures import ScriptedEngine

    monkeypatch.setattr("medprog.cli_common.build_lm", lambda *a, **k: ScriptedEngine(lambda call: call.choices[0]))
    paths = write_all(tmp_path, ROWS)
    r = runner.invoke(
        app,
        [
            "eval",
            "mcq",
            "--data",
            str(paths["parquet"]),
            "--lm",
            "local:x",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    preds = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in preds) == ["q1", "q2", "q3"]
    bad = tmp_path / "bad.parquet"
    pd.DataFrame([*ROWS[:1], {"id": "x", "question": "", "options": {"A": "a", "B": "b"}}]).to_parquet(bad)
    r = runner.invoke(
        app,
        ["eval", "mdagents", "--data", str(bad), "--lm", "local:x", "--out", str(tmp_path / "r2")],
        catch_exceptions=False,
    )
    assert r.exit_code == 2 and f"{bad}:row 2: expected a non-empty string 'question'" in " ".join(r.stderr.split())
    assert "Traceback" not in r.output
