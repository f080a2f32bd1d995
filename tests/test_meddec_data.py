"""MedDec loader, submission files and the synthetic generator."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from medprog.data.meddec import (
    CATEGORY_TAGS,
    Decision,
    MedDecFormatError,
    MedDecNote,
    gold_predictions,
    load_meddec,
    parse_note_ids,
    read_submission,
    write_submission,
)
from medprog.data.synth_meddec import synth_meddec


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "meddec"
    synth_meddec(out, n=60, seed=7)
    return out


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make_dataset(root: Path, note_id: str, text: str, annotations, stats: str | None = None, name=None) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "raw_text").mkdir(parents=True, exist_ok=True)
    (root / "raw_text" / f"{note_id.split('-')[0]}.txt").write_text(text)
    path = root / "data" / f"{name or note_id}.json"
    body = annotations if isinstance(annotations, str) else json.dumps(
        {"discharge_summary_id": note_id, "annotations": annotations}
    )
    path.write_text(body)
    if stats is not None:
        (root / "stats.csv").write_text(stats)
    return path


# ---------------------------------------------------------------- synthetic data


def test_synth_is_deterministic(tmp_path):
    a = synth_meddec(tmp_path / "a", n=40, seed=5)
    synth_meddec(tmp_path / "b", n=40, seed=5)
    synth_meddec(tmp_path / "c", n=40, seed=6)
    fa, fb, fc = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert fa == fb
    assert fa != fc
    assert a["notes"] == 40 and a["splits"] == {"train": 32, "val": 4, "test": 4}
    with pytest.raises(FileExistsError):
        synth_meddec(tmp_path / "a", n=10, seed=5)
    synth_meddec(tmp_path / "a", n=10, seed=5, overwrite=True)
    assert len(load_meddec(tmp_path / "a")) == 10


def test_synth_round_trip_and_shape(synth_dir):
    notes = load_meddec(synth_dir)
    assert len(notes) == 60
    for n in notes:
        assert parse_note_ids(n.id) is not None
        raw = json.loads((synth_dir / "data" / f"{n.id}.json").read_text())
        want = sorted(
            (a["start_offset"], a["end_offset"], int(a["category"].split()[1].rstrip(":")), a["decision"])
            for a in raw["annotations"]
            if int(a["category"].split()[1].rstrip(":")) <= 9
        )
        assert sorted((d.start, d.end, d.category, d.text) for d in n.decisions) == want
        assert all(n.text[d.start:d.end] == d.text for d in n.decisions)
        assert 90 <= len(n.text.split()) <= 160
        assert 4 <= len(n.decisions) <= 8
        assert "[**" in n.text and "Hospital Course:" in n.text
        assert n.gender in {"F", "M"} and n.ethnicity is not None and n.language is not None
    cats = Counter(d.category for n in notes for d in n.decisions)
    assert set(cats) == set(range(1, 10))
    nested = sum(
        1 for n in notes for a in n.decisions for b in n.decisions
        if a is not b and a.category != b.category and a.start <= b.start and b.end <= a.end
    )
    assert nested > 0
    assert len({n.ethnicity for n in notes}) >= 4 and len({n.language for n in notes}) >= 2


def test_synth_splits(synth_dir):
    train, val, test = (load_meddec(synth_dir, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (48, 6, 6)
    ids = [n.id for n in train + val + test]
    assert len(set(ids)) == 60
    listed = (synth_dir / "splits" / "val.txt").read_text().split()
    assert [n.id for n in val] == listed  # split order is kept


def test_synth_500_notes_in_seconds(tmp_path):
    t = time.perf_counter()
    synth_meddec(tmp_path / "big", n=500, seed=0)
    assert time.perf_counter() - t < 15


# ---------------------------------------------------------------- loader errors


def test_loader_joins_stats_and_strips_annotator_suffix(tmp_path):
    text = "Started lasix for CHF."
    make_dataset(
        tmp_path, "11_22_33-ann2", text,
        [{"annotation_id": "a1", "start_offset": 0, "end_offset": 13, "category": "Category 5: Drug related",
          "decision": "Started lasix"},
         {"annotation_id": "a2", "start_offset": 18, "end_offset": 21, "category": "Category 3: Defining problem"},
         {"annotation_id": "a3", "start_offset": 0, "end_offset": 4, "category": "Category 11: Other"}],
        stats="SUBJECT_ID,HADM_ID,ROW_ID,ETHNICITY,LANGUAGE,GENDER\n11,22,33,Hisp.,,F\n",
        name="11_22_33",
    )
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "val.txt").write_text("11_22_33\n")
    [n] = load_meddec(tmp_path, "val")
    assert n.id == "11_22_33-ann2"
    assert [(d.start, d.end, d.category, d.annotation_id, d.text) for d in n.decisions] == [
        (0, 13, 5, "a1", "Started lasix"), (18, 21, 3, "a2", "CHF")]  # category 11 dropped
    assert (n.gender, n.ethnicity, n.language) == ("F", "Hisp.", "")
    assert n.decisions[0].tag == "drug_decision"


@pytest.mark.parametrize(
    "ann, message",
    [
        ({"start_offset": 5, "end_offset": 99, "category": "Category 5: Drug related"}, "outside the text"),
        ({"start_offset": -1, "end_offset": 3, "category": "Category 5: Drug related"}, "outside the text"),
        ({"start_offset": 8, "end_offset": 8, "category": "Category 5: Drug related"}, "not before end_offset"),
        ({"start_offset": 9, "end_offset": 3, "category": "Category 5: Drug related"}, "not before end_offset"),
        ({"start_offset": 0, "end_offset": 3, "category": "Category 12: Made up"}, "unknown category"),
        ({"start_offset": 0, "end_offset": 3, "category": "drug stuff"}, "unknown category"),
        ({"start_offset": "x", "end_offset": 3, "category": "Category 5: Drug related"}, "not an integer"),
        ({"end_offset": 3, "category": "Category 5: Drug related"}, "missing 'start_offset'"),
    ],
)
def test_malformed_annotation_names_file_and_id(tmp_path, ann, message):
    path = make_dataset(tmp_path, "1_2_3", "Started lasix.", [dict(ann, annotation_id="bad-7")])
    with pytest.raises(MedDecFormatError) as err:
        load_meddec(tmp_path)
    assert str(path) in str(err.value) and "'bad-7'" in str(err.value) and message in str(err.value)


def test_bad_json_and_missing_text(tmp_path):
    path = make_dataset(tmp_path / "a", "1_2_3", "Started lasix.", '{"discharge_summary_id": "1_2_3", "annotations": [')
    with pytest.raises(MedDecFormatError, match="not valid JSON") as err:
        load_meddec(tmp_path / "a")
    assert str(path) in str(err.value)
    path = make_dataset(tmp_path / "b", "1_2_3", "x", [])
    (tmp_path / "b" / "raw_text" / "1_2_3.txt").unlink()
    with pytest.raises(MedDecFormatError, match="no note text"):
        load_meddec(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="annotations folder"):
        load_meddec(tmp_path / "nowhere")
    make_dataset(tmp_path / "c", "1_2_3", "x", '{"annotations": 3}')
    with pytest.raises(MedDecFormatError, match="'annotations' list"):
        load_meddec(tmp_path / "c")


def test_split_without_annotations(tmp_path):
    make_dataset(tmp_path, "1_2_3", "Started lasix.", [])
    (tmp_path / "raw_text" / "4_5_6.txt").write_text("Unlabelled note.")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "test.txt").write_text("4_5_6\n1_2_3\n")
    with pytest.raises(MedDecFormatError, match="'4_5_6' has no annotation file"):
        load_meddec(tmp_path, "test")
    notes = load_meddec(tmp_path, "test", require_annotations=False)
    assert [(n.id, n.decisions, n.gender) for n in notes] == [("4_5_6", [], None), ("1_2_3", [], None)]
    with pytest.raises(FileNotFoundError, match="split file"):
        load_meddec(tmp_path, "dev")


def test_decision_model_validates():
    with pytest.raises(ValueError):
        Decision(start=5, end=5, category=3)
    with pytest.raises(ValueError):
        Decision(start=0, end=5, category=12)
    assert Decision(start=0, end=5, category=10).tag is None
    assert [Decision(start=0, end=1, category=c).tag for c in range(1, 10)] == list(CATEGORY_TAGS)


# ---------------------------------------------------------------- submissions


def test_submission_round_trip(tmp_path, synth_dir):
    notes = load_meddec(synth_dir, "val")
    preds = gold_predictions(notes)
    write_submission(tmp_path / "sub" / "predictions.json", preds)
    back = read_submission(tmp_path / "sub" / "predictions.json")
    assert back == {k: sorted(set(v)) for k, v in preds.items()}
    raw = json.loads((tmp_path / "sub" / "predictions.json").read_text())
    assert set(raw[0]) == {"file_name", "predictions"}
    assert set(raw[0]["predictions"][0]) == {"start_offset", "end_offset", "category"}


@pytest.mark.parametrize(
    "body, message",
    [
        ({"file_name": "1_2_3"}, "JSON list"),
        ([{"predictions": []}], "item 0: 'file_name' missing"),
        ([{"file_name": "1_2_3", "predictions": {}}], "item 0 (1_2_3): 'predictions' is not a list"),
        ([{"file_name": "1_2_3", "predictions": []}, {"file_name": "4_5_6", "predictions": [
            {"start_offset": 0, "end_offset": 4, "category": 3},
            {"start_offset": "0", "end_offset": 4, "category": 3}]}], "item 1 (4_5_6): prediction 1: start_offset"),
        ([{"file_name": "1_2_3", "predictions": [{"start_offset": 5, "end_offset": 5, "category": 3}]}],
         "prediction 0: offsets [5, 5)"),
        ([{"file_name": "1_2_3", "predictions": [{"start_offset": 0, "end_offset": 5, "category": 0}]}],
         "prediction 0: category 0"),
        ([{"file_name": "1_2_3", "predictions": [{"start_offset": 0, "end_offset": 5}]}],
         "prediction 0: category None"),
        ([{"file_name": "1_2_3", "predictions": []}, {"file_name": "1_2_3", "predictions": []}], "appears twice"),
    ],
)
def test_bad_submission_names_file_and_index(tmp_path, body, message):
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(body))
    with pytest.raises(MedDecFormatError) as err:
        read_submission(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_submission_not_json(tmp_path):
    path = tmp_path / "pred.json"
    path.write_text("[{")
    with pytest.raises(MedDecFormatError, match="not valid JSON"):
        read_submission(path)


def test_note_model_round_trips_through_dump():
    n = MedDecNote(id="1_2_3", text="Started lasix.", decisions=[Decision(start=0, end=13, category=5, text="Started lasix")])
    assert MedDecNote.model_validate(n.model_dump()) == n
