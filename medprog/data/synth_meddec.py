"""Seeded synthetic discharge summaries in the official MedDec layout (see `medprog.data.meddec`).

What for: offline demos, tests, and the corpus medprog's own small tagger model is trained on.
Notes are short (about 90-160 words, 4-8 gold spans) so that a tiny model can learn them on a
CPU, but keep the traits that make MedDec hard: MIMIC-style sections and de-identification
tokens (``[**Hospital1 18**]``, ``[**2118-6-2**]``), many phrasings per category with slot
fillers, spans of different categories nested in one another (a drug decision that contains
the problem it treats), and plenty of non-decision sentences that reuse the same drugs,
problems, labs and procedures, so that matching words alone is not enough.

The same ``(n, seed)`` writes byte-identical files. Layout written::

    OUT/data/<id>.json  OUT/raw_text/<id>.txt  OUT/stats.csv  OUT/splits/{train,val,test}.txt
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import shutil
from pathlib import Path

from .meddec import ANNOTATIONS_DIR, SPLITS_DIR, STATS_FILE, TEXTS_DIR, category_label
from .synth_meddec_text import (
    ANTIBIOTICS,
    CAUSES,
    CONSULTS,
    DECISION_TEMPLATES,
    DRUGS,
    ETHNICITIES,
    FACILITIES,
    FILLERS,
    FREQS,
    HISTORY,
    IMAGING,
    INTERPRETER,
    LAB_VALUES,
    LABS,
    LANGUAGES,
    NEG_FINDINGS,
    ORGANISMS,
    POS_FINDINGS,
    PROBLEMS,
    PROCEDURES,
    RELATIONS,
    SECTION_CATEGORY_WEIGHTS,
    SERVICES,
    SPECIALISTS,
    SYMPTOMS,
    UNITS,
)

MIN_WORDS, MAX_WORDS = 90, 160
MIN_SPANS, MAX_SPANS = 4, 8

_SLOT_RE = re.compile(r"\{(\w+)\}")
_TAG_RE = re.compile(r"<(/?)(\d+)>")


def _deid_name(rng: random.Random) -> str:
    return rng.choice([
        f"[**Last Name (STitle) {rng.randint(100, 9999)}**]",
        f"[**First Name8 (NamePattern2) {rng.randint(100, 9999)}**] [**Last Name (NamePattern1) {rng.randint(100, 9999)}**]",
        f"[**Name (NI) {rng.randint(100, 9999)}**]",
    ])


def _deid_date(rng: random.Random, year: int) -> str:
    return f"[**{year}-{rng.randint(1, 12)}-{rng.randint(1, 28)}**]"


class _Note:
    """Per-note context: fixed patient facts plus slot sampling."""

    def __init__(self, rng: random.Random, female: bool, year: int):
        self.rng = rng
        self.female = female
        self.year = year
        self.hosp = rng.choice(["[**Hospital1 18**]", "[**Hospital1 18**]", "[**Hospital 1474**]", "[**Hospital3 4107**]"])

    def slot(self, name: str, sentence: dict[str, str]) -> str:
        r = self.rng
        if name in sentence:
            return sentence[name]
        if name == "drug" or name == "drug2":
            drug, doses = r.choice(DRUGS)
            if name == "drug2":
                while drug == sentence.get("drug"):
                    drug, doses = r.choice(DRUGS)
            sentence["dose"] = r.choice(doses)
            value = drug
        elif name == "dose":
            value = r.choice(r.choice(DRUGS)[1])
        elif name == "lab2":
            value = r.choice([x for x in LABS if x != sentence.get("lab")])
        else:
            table = {
                "pron": "she" if self.female else "he", "poss": "her" if self.female else "his",
                "obj": "her" if self.female else "him", "hosp": self.hosp,
            }
            if name in table:
                value = table[name]
            else:
                value = {
                    "freq": lambda: r.choice(FREQS), "abx": lambda: r.choice(ANTIBIOTICS),
                    "problem": lambda: r.choice(PROBLEMS), "cause": lambda: r.choice(CAUSES),
                    "procedure": lambda: r.choice(PROCEDURES), "imaging": lambda: r.choice(IMAGING),
                    "lab": lambda: r.choice(LABS), "val": lambda: r.choice(LAB_VALUES),
                    "neg_finding": lambda: r.choice(NEG_FINDINGS), "pos_finding": lambda: r.choice(POS_FINDINGS),
                    "organism": lambda: r.choice(ORGANISMS), "symptom": lambda: r.choice(SYMPTOMS),
                    "unit": lambda: r.choice(UNITS), "consult": lambda: r.choice(CONSULTS),
                    "specialist": lambda: r.choice(SPECIALISTS), "facility": lambda: r.choice(FACILITIES),
                    "relation": lambda: r.choice(RELATIONS), "name": lambda: _deid_name(r),
                    "date": lambda: _deid_date(r, self.year), "year": lambda: f"[**{self.year - r.randint(1, 9)}**]",
                    "tel": lambda: f"[**Telephone/Fax (1) {r.randint(100, 9999)}**]",
                    "k": lambda: str(r.randint(2, 6)), "n": lambda: str(r.randint(2, 5)),
                    "sbp": lambda: r.choice(["140", "160", "130"]), "sat": lambda: r.choice(["88", "90", "92"]),
                    "hr": lambda: r.choice(["100", "110", "90"]), "weight": lambda: str(r.randint(120, 240)),
                    "ef": lambda: str(r.choice([20, 25, 30, 35, 40, 55, 60])),
                }[name]()
        sentence[name] = value
        return value

    def fill(self, template: str) -> str:
        sentence: dict[str, str] = {}

        def sub(m: re.Match) -> str:
            name = m.group(1)
            value = self.slot(name.lower(), sentence)
            return value[:1].upper() + value[1:] if name[:1].isupper() else value

        return _SLOT_RE.sub(sub, template)


def _strip_tags(tagged: str) -> tuple[str, list[tuple[int, int, int]]]:
    """Remove ``<N>``/``</N>`` marks; return the plain text and its (start, end, category) spans."""
    out: list[str] = []
    pos = 0
    last = 0
    open_at: dict[int, int] = {}
    spans = []
    for m in _TAG_RE.finditer(tagged):
        piece = tagged[last:m.start()]
        out.append(piece)
        pos += len(piece)
        last = m.end()
        cat = int(m.group(2))
        if m.group(1):
            spans.append((open_at.pop(cat), pos, cat))
        else:
            open_at[cat] = pos
    out.append(tagged[last:])
    assert not open_at, tagged
    return "".join(out), spans


def _pick_category(rng: random.Random, section: str) -> int:
    weights = SECTION_CATEGORY_WEIGHTS[section]
    cats = list(weights)
    return rng.choices(cats, weights=[weights[c] for c in cats])[0]


def _decision_sentence(note: _Note, section: str, cat: int) -> str:
    options = [t.split("|", 1)[1] for t in DECISION_TEMPLATES[cat] if section in t.split("|", 1)[0]]
    return note.fill(note.rng.choice(options))


def _filler(note: _Note, section: str, used: set[str]) -> str:
    """A non-decision sentence, not repeating one the note already has."""
    for _ in range(10):
        sentence = note.fill(note.rng.choice(FILLERS[section]))
        if sentence not in used:
            break
    used.add(sentence)
    return sentence


def _compose(note: _Note, age: int, sex: str, interpreter: str | None) -> str:
    """One tagged note: header, HPI, hospital course, medications, instructions, follow-up."""
    r = note.rng
    adm_month, adm_day = r.randint(1, 12), r.randint(1, 20)
    header = (
        f"Admission Date:  [**{note.year}-{adm_month}-{adm_day}**]     "
        f"Discharge Date:  [**{note.year}-{adm_month}-{adm_day + r.randint(2, 8)}**]\n\n"
        f"Sex:   {sex}\nService: {r.choice(SERVICES)}\n\n"
    )
    hist = r.sample(HISTORY, 2)
    opener = (
        f"{age} yo {'F' if note.female else 'M'} with a history of {hist[0]} and {hist[1]} "
        f"who presented with {r.choice(SYMPTOMS)}."
    )
    plan = {"H": r.randint(1, 2), "C": r.randint(2, 4), "I": r.randint(1, 2), "F": r.randint(0, 1)}
    n_fill = {"H": r.randint(0, 2), "C": r.randint(1, 3), "I": r.randint(0, 1), "F": r.randint(0, 1)}
    sections: dict[str, list[str]] = {}
    used: set[str] = set()
    for sec in ("H", "C", "I", "F"):
        sentences = [_decision_sentence(note, sec, _pick_category(r, sec)) for _ in range(plan[sec])]
        for _ in range(n_fill[sec]):
            sentences.insert(r.randint(0, len(sentences)), _filler(note, sec, used))
        sections[sec] = sentences
    if interpreter:
        sections["H"].insert(0, f"History was obtained with the help of a {interpreter} interpreter.")
    if r.random() < 0.05:
        sections["F"].append(_decision_sentence(note, "F", r.choice([10, 11])))
    meds = []
    for i in range(r.randint(2, 3)):
        drug, doses = r.choice(DRUGS)
        meds.append(f"{i + 1}. {drug[:1].upper() + drug[1:]} {r.choice(doses)} PO {r.choice(FREQS)}")
    body = (
        "History of Present Illness:\n" + " ".join([opener] + sections["H"]) + "\n\n"
        + "Hospital Course:\n" + " ".join(sections["C"]) + "\n\n"
        + "Discharge Medications:\n" + "\n".join(meds) + "\n\n"
        + "Discharge Instructions:\n" + " ".join(sections["I"]) + "\n"
    )
    if sections["F"]:
        body += "\nFollowup Instructions:\n" + " ".join(sections["F"]) + "\n"
    return header + body


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Create the MedDec folders in ``out``, clearing an earlier set only when ``overwrite``."""
    existing = [out / ANNOTATIONS_DIR, out / TEXTS_DIR, out / SPLITS_DIR, out / STATS_FILE]
    if any(p.exists() for p in existing):
        if not overwrite:
            raise FileExistsError(f"{out} already holds MedDec data; pass overwrite=True to replace it")
        for p in existing:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    for sub in (ANNOTATIONS_DIR, TEXTS_DIR, SPLITS_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _compose_within_limits(note_rng: random.Random, female: bool, age: int, interpreter: str | None) -> tuple[str, list]:
    """Draw notes until one fits the word and span limits; return its text and sorted spans."""
    for _attempt in range(200):
        note = _Note(note_rng, female, note_rng.randint(2105, 2190))
        text, spans = _strip_tags(_compose(note, age, "F" if female else "M", interpreter))
        scored = [s for s in spans if s[2] <= 9]
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS and MIN_SPANS <= len(scored) <= MAX_SPANS:
            spans.sort()
            return text, spans
    raise RuntimeError("could not compose a note within the size limits")  # pragma: no cover - unreachable in practice


def _write_note(out: Path, note_id: str, text: str, spans: list) -> int:
    """Write one note's text and annotation files; return its number of spans."""
    annotations = [
        {
            "annotation_id": f"T{k + 1}",
            "start_offset": s,
            "end_offset": e,
            "category": category_label(c),
            "decision": text[s:e],
        }
        for k, (s, e, c) in enumerate(spans)
    ]
    (out / TEXTS_DIR / f"{note_id}.txt").write_text(text, encoding="utf-8", newline="\n")
    (out / ANNOTATIONS_DIR / f"{note_id}.json").write_text(
        json.dumps({"discharge_summary_id": note_id, "annotations": annotations}, indent=2) + "\n",
        encoding="utf-8", newline="\n",
    )
    return len(annotations)


def _synth_one(out: Path, rng: random.Random, used_subjects: set[int]) -> tuple[tuple, str, int]:
    """Draw and write one patient's note; return its stats row, note id and span count."""
    subject = rng.randint(100, 99999)
    while subject in used_subjects:
        subject = rng.randint(100, 99999)
    used_subjects.add(subject)
    hadm, row = rng.randint(100000, 199999), rng.randint(1, 60000)
    note_id = f"{subject}_{hadm}_{row}"
    female = rng.random() < 0.5
    ethnicity = rng.choices([e for e, _ in ETHNICITIES], weights=[w for _, w in ETHNICITIES])[0]
    language = rng.choices([x for x, _ in LANGUAGES], weights=[w for _, w in LANGUAGES])[0]
    interpreter = rng.choice(INTERPRETER) if language not in ("ENGL", "") and rng.random() < 0.5 else None
    age = rng.randint(22, 94)
    text, spans = _compose_within_limits(random.Random(rng.getrandbits(64)), female, age, interpreter)
    n_spans = _write_note(out, note_id, text, spans)
    return (subject, hadm, row, ethnicity, language, "F" if female else "M"), note_id, n_spans


def _write_stats(out: Path, rows: list[tuple]) -> None:
    """Write the per-note demographics table MedDec's subgroup scores read."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["SUBJECT_ID", "HADM_ID", "ROW_ID", "ETHNICITY", "LANGUAGE", "GENDER"])
    writer.writerows(rows)
    (out / STATS_FILE).write_text(buf.getvalue(), encoding="utf-8", newline="\n")


def _write_splits(out: Path, ids: list[str], rng: random.Random) -> dict[str, list[str]]:
    """Shuffle the note ids and write the 80/10/10 train/val/test split files."""
    order = ids[:]
    rng.shuffle(order)
    n = len(ids)
    n_train = round(0.8 * n)
    n_val = round(0.1 * n)
    splits = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    for name, members in splits.items():
        (out / SPLITS_DIR / f"{name}.txt").write_text("".join(i + "\n" for i in members), encoding="utf-8", newline="\n")
    return splits


def synth_meddec(out_dir: str | Path, n: int = 500, seed: int = 0, *, overwrite: bool = False) -> dict:
    """Write ``n`` synthetic annotated notes to ``out_dir`` in the MedDec layout; return a summary.

    Splits are 80/10/10 (train/val/test) over a seeded shuffle. Refuses to write into a folder
    that already holds MedDec notes unless ``overwrite`` (which first removes ``data/``,
    ``raw_text/``, ``splits/`` and ``stats.csv`` there).
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    out = Path(out_dir)
    _prepare_out(out, overwrite)
    rng = random.Random(seed)
    used_subjects: set[int] = set()
    rows, ids, n_spans = [], [], 0
    for _ in range(n):
        row, note_id, k = _synth_one(out, rng, used_subjects)
        rows.append(row)
        ids.append(note_id)
        n_spans += k
    _write_stats(out, rows)
    splits = _write_splits(out, ids, rng)
    return {"out_dir": str(out), "notes": n, "annotations": n_spans, "splits": {k: len(v) for k, v in splits.items()}}
