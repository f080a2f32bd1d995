"""MedDec (clinical decisions in discharge summaries) in its official on-disk layout.

Directory layout (the one the official MedDec repository and evaluator use)::

    DIR/data/<id>.json        one annotation file per discharge summary (subfolders allowed)
    DIR/raw_text/<id>.txt     the raw note text that offsets index into
    DIR/stats.csv             SUBJECT_ID,HADM_ID,ROW_ID,ETHNICITY,LANGUAGE,GENDER (optional)
    DIR/splits/<name>.txt     note ids, one a line (train.txt, val.txt, test.txt)

An annotation file is ``{"discharge_summary_id": "SUBJ_HADM_ROW[-annotator]", "annotations":
[{"annotation_id", "start_offset", "end_offset", "category": "Category N: Name", "decision"}]}``
(a JSON list of such objects is accepted too). The note id is the discharge summary id cut to
its first three ``_`` parts, as the official evaluator does; its text is ``raw_text/<id>.txt``,
or ``raw_text/<SUBJ_HADM_ROW>.txt`` when the id carries an annotator suffix. Offsets are
half-open ``[start, end)`` character offsets into that text. Categories 1-9 are the shared
task's label space; 10 (legal/insurance) and 11 (other) are dropped on load. ``Decision.text``
is the slice of the note the offsets select (the file's ``decision`` field is not trusted).

The submission format is the official one: ``[{"file_name", "predictions": [{"start_offset",
"end_offset", "category": int}]}]``. In memory, predictions are ``dict[note_id, list[(start,
end, category)]]``, the format every MedDec scorer, baseline and ensemble in medprog shares.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

CATEGORY_TAGS: tuple[str, ...] = (
    "contact_related",
    "gather_info",
    "define_problem",
    "treatment_goal",
    "drug_decision",
    "therapeutic_procedure",
    "evaluate_result",
    "defer_decision",
    "advice_and_precaution",
)
"""XML tag names for categories 1..9 (``CATEGORY_TAGS[c - 1]``)."""

CATEGORY_NAMES: dict[int, str] = {
    1: "Contact related",
    2: "Gathering additional information",
    3: "Defining problem",
    4: "Treatment goal",
    5: "Drug related",
    6: "Therapeutic procedure related",
    7: "Evaluating test result",
    8: "Deferment",
    9: "Advice and precaution",
    10: "Legal and insurance related",
    11: "Other",
}
"""Official category names, as written in ``"Category N: Name"``."""

SCORED_CATEGORIES = frozenset(range(1, 10))
KNOWN_CATEGORIES = frozenset(range(1, 12))
TAG_TO_CATEGORY: dict[str, int] = {t: i + 1 for i, t in enumerate(CATEGORY_TAGS)}

ANNOTATIONS_DIR = "data"
TEXTS_DIR = "raw_text"
STATS_FILE = "stats.csv"
SPLITS_DIR = "splits"
SUBMISSION_FILE = "predictions.json"
"""The official submission file an evaluation writes beside its records (what an ensemble reads)."""

Span = tuple[int, int, int]
"""``(start, end, category)``: one predicted or gold decision span."""
Predictions = dict[str, list[Span]]

_CATEGORY_RE = re.compile(r"Category\s*(\d+)")


class MedDecFormatError(ValueError):
    """A MedDec or submission file that breaks the format; the message names the file and item."""


class Decision(BaseModel):
    """One annotated decision: half-open character span ``[start, end)`` of the note, category 1..11."""

    start: int = Field(ge=0)
    end: int
    category: int = Field(ge=1, le=11)
    annotation_id: str | None = None
    text: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> "Decision":
        if self.end <= self.start:
            raise ValueError(f"decision end {self.end} must be after start {self.start}")
        return self

    @property
    def tag(self) -> str | None:
        """The XML tag for categories 1-9, None for the out-of-scope 10/11."""
        return CATEGORY_TAGS[self.category - 1] if self.category in SCORED_CATEGORIES else None

    def as_span(self) -> Span:
        return (self.start, self.end, self.category)


class MedDecNote(BaseModel):
    """A discharge summary, its gold decisions and the demographics the subgroup scores use.

    ``gender``/``ethnicity``/``language`` hold the raw stats.csv values; all three None means
    the note has no stats row (it then belongs to no subgroup).
    """

    id: str
    text: str
    decisions: list[Decision] = Field(default_factory=list)
    gender: str | None = None
    ethnicity: str | None = None
    language: str | None = None


def category_label(category: int) -> str:
    """``"Category N: Name"`` as written in annotation files."""
    return f"Category {category}: {CATEGORY_NAMES[category]}"


def parse_category(value: object, *, where: str) -> int:
    """Category number from ``"Category N: Name"`` (or an int); unknown ones raise MedDecFormatError."""
    if isinstance(value, bool):
        raise MedDecFormatError(f"{where}: category {value!r} is not a category")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (m := _CATEGORY_RE.match(value.strip())):
        number = int(m.group(1))
    else:
        raise MedDecFormatError(f"{where}: unknown category {value!r} (expected 'Category N: Name', N in 1..11)")
    if number not in KNOWN_CATEGORIES:
        raise MedDecFormatError(f"{where}: unknown category {value!r} (expected N in 1..11)")
    return number


def parse_note_ids(note_id: str) -> tuple[int, int, int] | None:
    """``(SUBJECT_ID, HADM_ID, ROW_ID)`` from ``SUBJ_HADM_ROW[-suffix]``; None if it has another shape."""
    parts = str(note_id).split("_")
    if len(parts) < 3:
        return None
    try:
        return int(parts[0]), int(parts[1]), int(parts[2].split("-")[0])
    except ValueError:
        return None


def base_note_id(note_id: str) -> str:
    """The id without an annotator suffix: ``78_100536_1787-ann2`` -> ``78_100536_1787``."""
    ids = parse_note_ids(note_id)
    return f"{ids[0]}_{ids[1]}_{ids[2]}" if ids else note_id


def _as_offset(value: object, *, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise MedDecFormatError(f"{where}: {key} {value!r} is not an integer")
    try:
        return int(value)
    except ValueError:
        raise MedDecFormatError(f"{where}: {key} {value!r} is not an integer") from None


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MedDecFormatError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise MedDecFormatError(f"{path}: not UTF-8 text ({exc})") from None


def read_split(root: str | Path, split: str) -> list[str]:
    """Note ids listed in ``DIR/splits/<split>.txt`` (blank lines and a ``.json`` suffix ignored)."""
    path = Path(root) / SPLITS_DIR / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found (expected one note id per line)")
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip().removesuffix(".json")
        if line:
            ids.append(line)
    return ids


def read_stats(path: str | Path) -> dict[tuple[int, int, int], dict[str, str]]:
    """Rows of stats.csv keyed by ``(SUBJECT_ID, HADM_ID, ROW_ID)``; rows with bad ids are skipped."""
    stats: dict[tuple[int, int, int], dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                key = (int(row.get("SUBJECT_ID") or ""), int(row.get("HADM_ID") or ""), int(row.get("ROW_ID") or ""))
            except ValueError:
                continue
            stats[key] = {k: (row.get(k) or "").strip() for k in ("GENDER", "ETHNICITY", "LANGUAGE")}
    return stats


def _annotation_records(path: Path) -> list[dict]:
    data = _read_json(path)
    records: list = data if isinstance(data, list) else [data]
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("annotations", None), list):
            where = f"{path}" if not isinstance(data, list) else f"{path}: item {i}"
            raise MedDecFormatError(f"{where}: expected an object with an 'annotations' list")
    return records


def _note_id(rec: dict, path: Path) -> str:
    raw = rec.get("discharge_summary_id")
    if raw is None:
        raw = path.stem
    if not isinstance(raw, (str, int)) or isinstance(raw, bool):
        raise MedDecFormatError(f"{path}: discharge_summary_id {raw!r} is not a string")
    return "_".join(str(raw).strip().split("_")[:3])


def _find_text(root: Path, note_id: str, path: Path) -> Path:
    for name in dict.fromkeys((note_id, base_note_id(note_id), path.stem)):
        candidate = root / TEXTS_DIR / f"{name}.txt"
        if candidate.is_file():
            return candidate
    raise MedDecFormatError(
        f"{path}: no note text for {note_id!r}; expected {root / TEXTS_DIR / (note_id + '.txt')}"
    )


def _parse_decisions(anns: list, text: str, path: Path) -> list[Decision]:
    decisions = []
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise MedDecFormatError(f"{path}: annotation #{i} is not an object")
        ann_id = ann.get("annotation_id")
        ann_id = None if ann_id is None else str(ann_id)
        where = f"{path}: annotation {ann_id!r}" if ann_id is not None else f"{path}: annotation #{i}"
        for key in ("start_offset", "end_offset", "category"):
            if key not in ann:
                raise MedDecFormatError(f"{where}: missing {key!r}")
        start = _as_offset(ann["start_offset"], where=where, key="start_offset")
        end = _as_offset(ann["end_offset"], where=where, key="end_offset")
        category = parse_category(ann["category"], where=where)
        if start < 0 or end > len(text):
            raise MedDecFormatError(
                f"{where}: offsets [{start}, {end}) are outside the text (length {len(text)})"
            )
        if start >= end:
            raise MedDecFormatError(f"{where}: start_offset {start} is not before end_offset {end}")
        if category not in SCORED_CATEGORIES:
            continue
        decisions.append(
            Decision(start=start, end=end, category=category, annotation_id=ann_id, text=text[start:end])
        )
    decisions.sort(key=lambda d: (d.start, d.end, d.category))
    return decisions


def _read_annotated(root: Path, ann_dir: Path, wanted: set[str] | None) -> dict[str, MedDecNote]:
    """Every annotated note under ``ann_dir`` (only those in ``wanted`` when given), keyed by id."""
    notes: dict[str, MedDecNote] = {}
    sources: dict[str, Path] = {}
    for path in sorted(ann_dir.rglob("*.json")):
        if (wanted is not None and path.stem not in wanted and base_note_id(path.stem) not in wanted
                and parse_note_ids(path.stem) is not None):  # cheap pre-filter; a stem that is no id is read
            continue
        for rec in _annotation_records(path):
            note_id = _note_id(rec, path)
            if wanted is not None and note_id not in wanted and base_note_id(note_id) not in wanted:
                continue
            if note_id in notes:
                raise MedDecFormatError(f"{path}: note {note_id!r} is also annotated in {sources[note_id]}")
            text = _find_text(root, note_id, path).read_text(encoding="utf-8")
            notes[note_id] = MedDecNote(id=note_id, text=text, decisions=_parse_decisions(rec["annotations"], text, path))
            sources[note_id] = path
    return notes


def _in_split_order(root: Path, split: str, wanted: list[str], notes: dict[str, MedDecNote],
                    require_annotations: bool) -> list[MedDecNote]:
    """The notes of ``wanted`` in the split file's order; unannotated ones load bare unless required."""
    by_base: dict[str, list[str]] = {}
    for nid in notes:
        by_base.setdefault(base_note_id(nid), []).append(nid)
    ordered: list[str] = []
    for wid in wanted:
        hits = [wid] if wid in notes else by_base.get(wid, [])
        if not hits:
            text_path = root / TEXTS_DIR / f"{wid}.txt"
            if require_annotations or not text_path.is_file():
                raise MedDecFormatError(
                    f"{root / SPLITS_DIR / f'{split}.txt'}: note {wid!r} has no annotation file in {root / ANNOTATIONS_DIR}"
                    + ("" if require_annotations else f" and no text at {text_path}")
                )
            notes[wid], hits = MedDecNote(id=wid, text=text_path.read_text(encoding="utf-8")), [wid]
        ordered.extend(h for h in hits if h not in ordered)
    return [notes[i] for i in ordered]


def _attach_demographics(root: Path, notes: list[MedDecNote]) -> None:
    """Copy gender, ethnicity and language from ``stats.csv`` (when present) onto the notes."""
    stats = read_stats(root / STATS_FILE) if (root / STATS_FILE).is_file() else {}
    for note in notes:
        row = stats.get(parse_note_ids(note.id) or (-1, -1, -1))
        if row is not None:
            note.gender, note.ethnicity, note.language = row["GENDER"], row["ETHNICITY"], row["LANGUAGE"]


def load_meddec(root: str | Path, split: str | None = None, *, require_annotations: bool = True) -> list[MedDecNote]:
    """Load notes, gold decisions and demographics from ``root`` (layout in the module docstring).

    With ``split``, only the ids in ``splits/<split>.txt`` are returned, in that file's order;
    otherwise all annotated notes, sorted by id. With ``require_annotations=False`` a split id
    that has a text but no annotation file loads with no decisions (for unlabelled test notes).
    Demographics are the raw stats.csv values ("" where a cell is empty) and None for a note
    missing from stats.csv or when there is no stats.csv; such a note joins no subgroup.
    """
    root = Path(root)
    ann_dir = root / ANNOTATIONS_DIR
    if not ann_dir.is_dir():
        raise FileNotFoundError(
            f"MedDec annotations folder {ann_dir} not found; expected DIR/{ANNOTATIONS_DIR}/<id>.json "
            f"and DIR/{TEXTS_DIR}/<id>.txt (create synthetic data with medprog.data.synth_meddec)"
        )
    wanted = read_split(root, split) if split is not None else None
    notes = _read_annotated(root, ann_dir, None if wanted is None else set(wanted))
    result = ([notes[i] for i in sorted(notes)] if wanted is None
              else _in_split_order(root, str(split), wanted, notes, require_annotations))
    _attach_demographics(root, result)
    return result


def gold_predictions(notes: list[MedDecNote]) -> Predictions:
    """The notes' gold decisions (categories 1-9) in the shared predictions format."""
    return {
        n.id: [d.as_span() for d in n.decisions if d.category in SCORED_CATEGORIES] for n in notes
    }


def read_submission(path: str | Path) -> Predictions:
    """Read an official submission file into ``{note_id: [(start, end, category), ...]}``.

    Each prediction needs integer offsets with ``0 <= start < end`` and an integer category in
    1..11 (10 and 11 are kept but never scored). Errors name the file and the item index.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise MedDecFormatError(f"{path}: a submission is a JSON list of {{'file_name', 'predictions'}} objects")
    out: Predictions = {}
    for i, item in enumerate(data):
        where = f"{path}: item {i}"
        if not isinstance(item, dict):
            raise MedDecFormatError(f"{where}: not an object")
        name = item.get("file_name")
        if not isinstance(name, str) or not name:
            raise MedDecFormatError(f"{where}: 'file_name' missing or not a string")
        where = f"{path}: item {i} ({name})"
        name = name.removesuffix(".json").removesuffix(".txt")
        if name in out:
            raise MedDecFormatError(f"{where}: file_name {name!r} appears twice")
        preds = item.get("predictions", [])
        if not isinstance(preds, list):
            raise MedDecFormatError(f"{where}: 'predictions' is not a list")
        spans: list[Span] = []
        for j, pred in enumerate(preds):
            pwhere = f"{where}: prediction {j}"
            if not isinstance(pred, dict):
                raise MedDecFormatError(f"{pwhere}: not an object")
            vals = []
            for key in ("start_offset", "end_offset", "category"):
                v = pred.get(key)
                if isinstance(v, bool) or not isinstance(v, int):
                    raise MedDecFormatError(f"{pwhere}: {key} {v!r} is not an integer")
                vals.append(v)
            start, end, category = vals
            if start < 0 or start >= end:
                raise MedDecFormatError(f"{pwhere}: offsets [{start}, {end}) need 0 <= start < end")
            if category not in KNOWN_CATEGORIES:
                raise MedDecFormatError(f"{pwhere}: category {category} is not in 1..11")
            spans.append((start, end, category))
        out[name] = spans
    return out


def write_submission(path: str | Path, preds: Predictions) -> None:
    """Write ``{note_id: [(start, end, category)]}`` as an official submission file (spans sorted)."""
    items = []
    for name, spans in preds.items():
        clean = sorted({(int(s), int(e), int(c)) for s, e, c in spans})
        for k, (s, e, c) in enumerate(clean):
            if s < 0 or s >= e or c not in KNOWN_CATEGORIES:
                raise MedDecFormatError(f"{path}: note {name!r}: span {k} ({s}, {e}, {c}) is not a valid prediction")
        items.append(
            {"file_name": name, "predictions": [{"start_offset": s, "end_offset": e, "category": c} for s, e, c in clean]}
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(items, indent=2) + "\n", encoding="utf-8")
