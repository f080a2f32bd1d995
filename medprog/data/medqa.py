"""MedQA-style multiple-choice questions (jsonl, parquet, CSV or a ``save_to_disk`` directory),
and a seeded synthetic generator.

A row is ``{"question": str, "options": {letter: text}, "answer_idx": letter, ...}`` with 2 to 26
options; options may also be a list (lettered A, B, ...) under ``options`` or ``choices``; the
gold is a letter (or a 0-based index) under ``answer_idx``, ``answer_letter`` or ``label``, else
the ``answer`` text or letter; the id (``id``, ``realidx``, ``qid``) is a string, an integer, or
absent (the row number). Rows in the wild carry more (rationales, chain-of-thought,
earlier models' answers, the answer text, metamap phrases): the loader keeps only the id,
the question, the options and the gold letter, so nothing else can reach a prompt.
Tables (CSV, parquet) may instead keep the options as columns named ``A``, ``B``, ... or
``option_A``, ``option_B``, ...; an empty cell is no option, so 4- and 5-option rows share a file.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

from pydantic import BaseModel

from medprog.data.rows import read_rows, resolve


class MedQAFormatError(ValueError):
    """A row that is not a usable multiple-choice question; the message names file and line."""


class MCQItem(BaseModel):
    id: str
    question: str
    options: dict[str, str]
    answer: str | None = None
    """The gold option letter (None when unlabelled)."""


MAX_OPTIONS = 26
GOLD_KEYS = ("answer_idx", "answer_letter", "label")
ID_KEYS = ("id", "realidx", "qid")


def _options(value: object, where: str) -> dict[str, str]:
    if isinstance(value, dict):
        opts = {str(k).strip(): v for k, v in value.items()}
    elif isinstance(value, list) and len(value) <= MAX_OPTIONS:
        opts = {}
        for i, v in enumerate(value):
            if isinstance(v, dict) and {"key", "value"} <= set(v):
                opts[str(v["key"]).strip()] = v["value"]
            else:
                opts[string.ascii_uppercase[i]] = v
    elif isinstance(value, list):
        raise MedQAFormatError(f"{where}: expected 2 to {MAX_OPTIONS} options, got {len(value)}")
    else:
        raise MedQAFormatError(f"{where}: expected 'options' as an object {{letter: text}} or a list of texts, "
                               f"got {type(value).__name__}")
    if not 2 <= len(opts) <= MAX_OPTIONS:
        raise MedQAFormatError(f"{where}: expected 2 to {MAX_OPTIONS} options, got {len(opts)}")
    bad = [k for k, v in opts.items() if not k or not isinstance(v, (str, int, float)) or not str(v).strip()]
    if bad:
        raise MedQAFormatError(f"{where}: expected a non-empty text for every option, not for {bad}")
    return {k: str(v) for k, v in opts.items()}


def _gold(row: dict, opts: dict[str, str], where: str) -> str | None:
    """The gold letter: a letter key, a 0-based index (int) into the options, or else the answer text."""
    gold = next((row[k] for k in GOLD_KEYS if row.get(k) not in (None, "")), None)
    if gold is None:
        text = row.get("answer")
        if isinstance(text, str) and text.strip() in opts:
            return text.strip()
        return next((k for k, v in opts.items() if isinstance(text, str) and v.strip() == text.strip()), None)
    if isinstance(gold, int) and not isinstance(gold, bool) and str(gold) not in opts and 0 <= gold < len(opts):
        return list(opts)[gold]
    gold = str(gold).strip()
    if gold not in opts:
        raise MedQAFormatError(f"{where}: expected the gold letter to be one of the options {list(opts)}, got {gold!r}")
    return gold


def _option_columns(row: dict) -> dict[str, object]:
    """Options kept as columns (a CSV's ``A,B,C,D`` or ``option_A,...``); empty cells are no option."""
    cols = {}
    for letter in string.ascii_uppercase:
        value = row.get(letter, row.get(f"option_{letter}"))
        if value not in (None, ""):
            cols[letter] = value
    return cols


def parse_row(row: object, where: str, index: int) -> MCQItem:
    """One question from a jsonl row; only id, question, options and gold are kept."""
    if not isinstance(row, dict):
        raise MedQAFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise MedQAFormatError(f"{where}: expected a non-empty string 'question'")
    columns = _option_columns(row)
    if "options" not in row and "choices" not in row and not columns:
        raise MedQAFormatError(f"{where}: expected 'options' (or 'choices', or columns A, B, ... / option_A, "
                               "option_B, ...) with the answer options")
    opts = _options(row["options"] if "options" in row else row.get("choices", columns), where)
    rid = next((row[k] for k in ID_KEYS if row.get(k) not in (None, "")), index)
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise MedQAFormatError(f"{where}: expected the question id to be a string or an integer, got {rid!r}")
    return MCQItem(id=str(rid), question=question, options=opts, answer=_gold(row, opts, where))


def load_medqa(path: str | Path, split: str | None = None) -> list[MCQItem]:
    """Questions from a jsonl, parquet or CSV file or a ``save_to_disk`` directory (see
    `medprog.data.rows`), or from ``DIR/<split>.{jsonl,parquet,csv}`` (default ``test``)."""
    path = resolve(path, split, "MedQA-style data file (create one with `medprog data synth medqa`)")
    items = [parse_row(row.value, row.where, row.position) for row in read_rows(path, split, MedQAFormatError)]
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise MedQAFormatError(f"{path}: question id {dup!r} occurs more than once")
    return items


# ----------------------------------------------------------------------- synthetic

_CASES = [
    ("chest pain radiating to the left arm and diaphoresis", "ST elevation in leads II, III and aVF",
     "Acute inferior myocardial infarction", ["Pericarditis", "Aortic dissection", "Pulmonary embolism",
                                              "Costochondritis"]),
    ("fever, productive cough and pleuritic chest pain", "right lower lobe consolidation on chest x-ray",
     "Community-acquired pneumonia", ["Pulmonary embolism", "Lung abscess", "Acute bronchitis", "Sarcoidosis"]),
    ("polyuria, polydipsia and weight loss", "a random plasma glucose of 342 mg/dL",
     "Type 1 diabetes mellitus", ["Diabetes insipidus", "Primary polydipsia", "Hyperthyroidism",
                                  "Cushing syndrome"]),
    ("fatigue, cold intolerance and constipation", "a TSH of 14 mIU/L and low free T4",
     "Primary hypothyroidism", ["Depression", "Iron deficiency anemia", "Adrenal insufficiency",
                                "Central hypothyroidism"]),
    ("sudden severe headache described as the worst of her life", "blood in the basal cisterns on CT",
     "Subarachnoid hemorrhage", ["Migraine", "Tension headache", "Bacterial meningitis", "Cluster headache"]),
    ("right lower quadrant pain, anorexia and low-grade fever", "tenderness at McBurney's point",
     "Acute appendicitis", ["Ovarian torsion", "Mesenteric adenitis", "Crohn disease", "Ureteric colic"]),
    ("progressive exertional dyspnea and ankle swelling", "an ejection fraction of 30% on echocardiography",
     "Heart failure with reduced ejection fraction", ["Nephrotic syndrome", "Cirrhosis",
                                                      "Constrictive pericarditis", "COPD"]),
    ("painless jaundice and weight loss", "a mass in the head of the pancreas",
     "Pancreatic adenocarcinoma", ["Choledocholithiasis", "Hepatitis A", "Primary sclerosing cholangitis",
                                   "Gilbert syndrome"]),
]
_PEOPLE = ["man", "woman"]


def split_sizes(n: int) -> dict[str, int]:
    """80/10/10 train/dev/test sizes (test gets at least one)."""
    test = max(1, n // 10)
    dev = n // 10 if n - test > n // 10 else 0
    return {"train": n - test - dev, "dev": dev, "test": test}


def write_jsonl_splits(out: Path, rows: list[dict], overwrite: bool) -> dict[str, int]:
    """Rows to ``out`` (a .jsonl file) or to ``out/{train,dev,test}.jsonl`` (a directory)."""
    if out.suffix == ".jsonl":
        parts = {out: rows}
    else:
        sizes, parts, start = split_sizes(len(rows)), {}, 0
        for name in ("train", "dev", "test"):
            parts[out / f"{name}.jsonl"] = rows[start:start + sizes[name]]
            start += sizes[name]
    if not overwrite and any(p.exists() for p in parts):
        raise FileExistsError(f"{out} already holds data; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True) if out.suffix == ".jsonl" else out.mkdir(parents=True, exist_ok=True)
    for path, part in parts.items():
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    return {str(p): len(part) for p, part in parts.items()}


def synth_medqa(out: str | Path, n: int = 50, seed: int = 0, *, overwrite: bool = False) -> dict:
    """Write ``n`` seeded synthetic MedQA-style questions to ``out``: a .jsonl file, or a directory
    that gets ``train.jsonl``, ``dev.jsonl`` and ``test.jsonl`` (80/10/10). Rows carry extra
    fields, as rows in the wild do (answer text, rationale, an earlier model's answer), which
    the loader never passes on. 4-option, 5-option and yes/no/maybe questions are mixed."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        symptoms, finding, dx, distractors = rng.choice(_CASES)
        age, who = rng.randint(19, 84), rng.choice(_PEOPLE)
        stem = f"A {age}-year-old {who} presents with {symptoms}. Workup shows {finding}."
        kind = rng.choice(["4", "5", "ynm"])
        if kind == "ynm":
            wrong = rng.choice(distractors)
            truth = rng.random() < 0.5
            shown = dx if truth else wrong
            options = {"A": "yes", "B": "no", "C": "maybe"}
            question = f"{stem} Is the most likely diagnosis {shown.lower()}?"
            gold = "A" if truth else "B"
        else:
            k = int(kind)
            choices = rng.sample(distractors, k - 1) + [dx]
            rng.shuffle(choices)
            options = dict(zip(string.ascii_uppercase, choices))
            question = f"{stem} Which of the following is the most likely diagnosis?"
            gold = next(letter for letter, text in options.items() if text == dx)
        rows.append({
            "id": f"synth-{seed}-{i}", "question": question, "options": options, "answer_idx": gold,
            "answer": options[gold], "meta_info": "synthetic",
            "rationale": f"The combination of {symptoms} and {finding} points to {dx}.",
            "model_answer": rng.choice(list(options)),
        })
    files = write_jsonl_splits(Path(out), rows, overwrite)
    return {"dataset": "medqa", "out": str(out), "n": n, "seed": seed, "files": files}
