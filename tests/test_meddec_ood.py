"""The out-of-template MedDec generator: seeded, in the official layout, loadable, and its own text."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medprog.cli import app
from medprog.data.meddec import CATEGORY_NAMES, gold_predictions, load_meddec, parse_category, read_split
from medprog.data.sentences import sentence_spans
from medprog.data.synth_meddec import synth_meddec
from medprog.data.synth_meddec_ood import synth_meddec_ood, unmark
from medprog.metrics.meddec import score


@pytest.fixture(scope="module")
def ood(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ood") / "ood"
    synth_meddec_ood(out, n=25, seed=7)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_files(ood: Path, tmp_path: Path) -> None:
    synth_meddec_ood(tmp_path / "again", n=25, seed=7)
    synth_meddec_ood(tmp_path / "other", n=25, seed=8)
    assert _files(tmp_path / "again") == _files(ood)
    other = _files(tmp_path / "other")
    assert set(other) != set(_files(ood))  # other note ids
    with pytest.raises(FileExistsError):
        synth_meddec_ood(ood, n=2, seed=7)


def test_unmark_nested_marks() -> None:
    text, spans = unmark("We ⟦5|gave x ⟦4|to keep y⟧⟧ today. ⟦9| rest ⟧")
    assert text == "We gave x to keep y today.  rest "
    assert spans == [(3, 19, 5), (10, 19, 4), (28, 32, 9)]
    with pytest.raises(ValueError):
        unmark("⟦5|open")
    with pytest.raises(ValueError):
        unmark("close⟧")


def test_layout_is_the_official_one(ood: Path) -> None:
    ids = read_split(ood, "test")
    assert len(ids) == 25 and len(set(ids)) == 25
    categories: set[int] = set()
    n_list = n_suffix = 0
    for path in sorted((ood / "data").glob("*.json")):
        body = json.loads(path.read_text(encoding="utf-8"))
        n_list += isinstance(body, list)
        record = body[0] if isinstance(body, list) else body
        note_id = record["discharge_summary_id"]
        n_suffix += "-" in note_id
        assert path.stem == note_id and note_id.split("-")[0] in ids
        text = (ood / "raw_text" / f"{note_id.split('-')[0]}.txt").read_text(encoding="utf-8")
        assert record["annotations"], path
        for ann in record["annotations"]:
            s, e = ann["start_offset"], ann["end_offset"]
            assert 0 <= s < e <= len(text)
            assert ann["decision"] == text[s:e] and text[s:e].strip() == text[s:e]
            c = parse_category(ann["category"], where=str(path))
            assert ann["category"] == f"Category {c}: {CATEGORY_NAMES[c]}"
            categories.add(c)
    assert categories == set(range(1, 12))  # every MedDec category, 10 and 11 included
    assert n_list and n_suffix  # both record shapes, and annotator suffixes
    with open(ood / "stats.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["GENDER"] for r in rows} == {"F", "M"}
    assert all(f"{r['SUBJECT_ID']}_{r['HADM_ID']}_{r['ROW_ID']}" in ids for r in rows)


def test_loads_and_scores_with_the_meddec_tools(ood: Path) -> None:
    notes = load_meddec(ood, "test")
    assert len(notes) == 25
    assert all(1 <= d.category <= 9 for n in notes for d in n.decisions)
    assert any(a.start < b.end and b.start < a.end
               for n in notes for a in n.decisions for b in n.decisions if a is not b)  # overlapping spans
    assert sum(len(n.text) for n in notes) / len(notes) > 2000  # long notes
    assert re.search(r"\[\*\*[^\]]+\*\*\]", notes[0].text)  # de-identification tokens
    gold = score(notes, gold_predictions(notes))
    assert gold["span_f1"] == 1.0 and gold["token_f1"] == 1.0
    assert {"sex", "race", "language"} <= set(gold["groups"])
    assert score(notes, {})["span_f1"] == 0.0


def _sentences(root: Path) -> set[str]:
    """Normalised sentences (lines of a sentence), de-id tokens and numbers masked, of 5+ words."""
    out = set()
    for note in load_meddec(root):
        for a, b in sentence_spans(note.text):
            for line in note.text[a:b].split("\n"):
                s = re.sub(r"\d+", "0", re.sub(r"\[\*\*.*?\*\*\]", "X", line.lower()))
                words = [w for w in s.split() if w not in ("X", "0")]
                if len(words) >= 5:
                    out.add(" ".join(s.split()))
    return out


def test_shares_no_sentence_with_the_first_generator(ood: Path, tmp_path: Path) -> None:
    synth_meddec(tmp_path / "first", n=150, seed=0)
    first, second = _sentences(tmp_path / "first"), _sentences(ood)
    assert len(first) > 100 and len(second) > 300
    assert first & second == set()


def test_cli_writes_the_set_and_scores_it(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ood"
    r = runner.invoke(app, ["data", "synth", "meddec-ood", "--out", str(out), "--n", "4", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["n_notes"] == 4
    notes = load_meddec(out, "test")
    sub = tmp_path / "gold.json"
    sub.write_text(json.dumps([{"file_name": n.id, "predictions": [
        {"start_offset": d.start, "end_offset": d.end, "category": d.category} for d in n.decisions]} for n in notes]))
    r = runner.invoke(app, ["score", "meddec", "--gold", str(out), "--pred", str(sub), "--split", "test"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["span_f1"] == 1.0
    r = runner.invoke(app, ["data", "synth", "meddec-ood", "--out", str(out), "--n", "4"])
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_baseline_learns_the_keyword_rule_from_train_data(tmp_path: Path) -> None:
    runner = CliRunner()
    synth_meddec(tmp_path / "first", n=30, seed=0)
    synth_meddec_ood(tmp_path / "ood", n=3, seed=1)
    r = runner.invoke(app, ["baseline", "meddec", "--data", str(tmp_path / "ood"), "--split", "test"])
    assert r.exit_code == 2 and "--train-data" in r.output  # an evaluation-only set has no train split
    r = runner.invoke(app, ["baseline", "meddec", "--data", str(tmp_path / "ood"), "--split", "test",
                            "--train-data", str(tmp_path / "first")])
    assert r.exit_code == 0, r.output
    assert "keyword" in r.output and "learned from" in r.output
