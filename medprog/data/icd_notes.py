"""Clinical notes with ICD-10-CM codes (``{id, note, targets: [codes]}`` as jsonl, parquet,
CSV or a ``save_to_disk`` directory), and a seeded
generator of synthetic notes written from ICD-10-CM titles, inclusion terms and common phrasings.

The generator draws conditions from families of common outpatient diagnoses (one variant per
family, so gold sets hold no Excludes1 pair), including a code-first pair (anemia in chronic
kidney disease with its CKD stage) and an "also code" pair (long-term drug use), and adds a
negated condition that must not be coded.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from pydantic import BaseModel

from medprog.data.medqa import write_jsonl_splits
from medprog.data.rows import read_rows, resolve


class IcdNotesFormatError(ValueError):
    """A row that is not ``{id, note, targets}``; the message names file and line."""


class CodedNote(BaseModel):
    id: str
    note: str
    targets: list[str] = []


def load_icd_notes(path: str | Path, split: str | None = None) -> list[CodedNote]:
    """Notes from a jsonl, parquet or CSV file or a ``save_to_disk`` directory (see
    `medprog.data.rows`), or from ``DIR/<split>.{jsonl,parquet,csv}`` (default ``test``)."""
    path = resolve(path, split, "coded-notes data file (create one with `medprog data synth icd_notes`)")
    return [parse_note(row.value, row.where, row.position) for row in read_rows(path, split, IcdNotesFormatError)]


def parse_note(row: object, where: str, index: int) -> CodedNote:
    """One coded note; ``targets`` (or ``codes``) is a list, or in a table one cell of codes
    separated by ``;``, ``,`` or spaces."""
    if not isinstance(row, dict) or not isinstance(row.get("note"), str):
        raise IcdNotesFormatError(f"{where}: expected an object with a string 'note'")
    targets = row.get("targets", row.get("codes", []))
    if isinstance(targets, str):
        targets = re.split(r"[;,\s]+", targets.strip()) if targets.strip() else []
    if not isinstance(targets, list):
        raise IcdNotesFormatError(f"{where}: 'targets' must be a list of codes")
    return CodedNote(id=str(row.get("id", index)), note=row["note"], targets=[str(t) for t in targets])


# ----------------------------------------------------------------------- synthetic

# code → (phrasings, plan)
_CODES: dict[str, tuple[list[str], str]] = {
    "E11.9": (["type 2 diabetes mellitus without complications", "type 2 diabetes, no known complications"],
              "continue current regimen, HbA1c in 3 months"),
    "E11.65": (["type 2 diabetes mellitus with hyperglycemia", "poorly controlled type 2 diabetes with hyperglycemia"],
               "titrate therapy, glucose log"),
    "E10.9": (["type 1 diabetes mellitus without complications", "type 1 diabetes, uncomplicated"],
              "basal-bolus insulin unchanged"),
    "Z79.84": (["long term use of oral hypoglycemic drugs", "on metformin long term"], "refill"),
    "Z79.4": (["long term current use of insulin", "insulin dependent for years"], "refill insulin"),
    "I10": (["essential hypertension", "primary hypertension"], "continue lisinopril"),
    "E78.5": (["hyperlipidemia", "hyperlipidemia, unspecified"], "continue atorvastatin"),
    "E78.00": (["pure hypercholesterolemia", "elevated LDL hypercholesterolemia"], "statin therapy"),
    "J18.9": (["pneumonia, organism unspecified", "community acquired pneumonia"],
              "oral antibiotics, recheck in 1 week"),
    "J44.9": (["chronic obstructive pulmonary disease", "COPD, stable"], "continue inhalers"),
    "J45.909": (["asthma, uncomplicated", "mild asthma without exacerbation"], "albuterol as needed"),
    "K21.9": (["gastro-esophageal reflux disease without esophagitis", "GERD"], "continue omeprazole"),
    "K59.00": (["constipation", "chronic constipation"], "fiber and polyethylene glycol"),
    "I50.9": (["heart failure", "congestive heart failure"], "daily weights, continue furosemide"),
    "I48.91": (["atrial fibrillation", "paroxysmal atrial fibrillation, unspecified"], "rate control, anticoagulation"),
    "F32.A": (["depression", "depressive disorder"], "continue sertraline, therapy referral"),
    "F41.1": (["generalized anxiety disorder", "chronic anxiety state"], "CBT referral"),
    "E03.9": (["hypothyroidism", "acquired hypothyroidism"], "continue levothyroxine, TSH in 6 weeks"),
    "N18.30": (["chronic kidney disease stage 3", "CKD stage 3"], "avoid nephrotoxins, renal panel"),
    "N18.4": (["chronic kidney disease stage 4", "severe CKD stage 4"], "nephrology follow-up"),
    "D63.1": (["anemia in chronic kidney disease", "anemia due to CKD"], "start erythropoiesis-stimulating agent"),
    "N39.0": (["urinary tract infection", "UTI"], "nitrofurantoin for 5 days"),
    "G47.33": (["obstructive sleep apnea", "OSA on CPAP"], "continue CPAP"),
    "E66.9": (["obesity", "obesity, unspecified"], "dietitian referral"),
    "M54.50": (["low back pain", "lumbago"], "physical therapy, NSAIDs"),
}
# one variant per family is drawn; a variant is a list of codes coded together
_FAMILIES: list[list[list[str]]] = [
    [["E11.9"], ["E11.65", "Z79.84"], ["E10.9", "Z79.4"]],
    [["I10"]],
    [["E78.5"], ["E78.00"]],
    [["J18.9"], ["J44.9"], ["J45.909"]],
    [["K21.9"], ["K59.00"]],
    [["I50.9"], ["I48.91"]],
    [["F32.A"], ["F41.1"]],
    [["E03.9"]],
    [["N18.30"], ["N18.4"], ["N18.30", "D63.1"], ["N18.4", "D63.1"]],
    [["N39.0"]],
    [["G47.33"]],
    [["E66.9"]],
    [["M54.50"]],
]
SYNTH_CODES = sorted(_CODES)
"""Every code the generator may write (tests restrict the retrieval index to these categories)."""


def synth_icd_notes(out: str | Path, n: int = 50, seed: int = 0, *, overwrite: bool = False) -> dict:
    """Write ``n`` seeded synthetic coded notes to ``out``: a .jsonl file, or a directory that gets
    ``train.jsonl``, ``dev.jsonl`` and ``test.jsonl`` (80/10/10). Same ``(n, seed)``, same bytes."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        families = rng.sample(range(len(_FAMILIES)), rng.randint(2, 4))
        codes = [c for f in families for c in rng.choice(_FAMILIES[f])]
        absent = rng.choice([f for f in range(len(_FAMILIES)) if f not in families])
        negated = rng.choice(_CODES[_FAMILIES[absent][0][0]][0])
        age, sex = rng.randint(25, 90), rng.choice(["man", "woman"])
        phrases = {c: rng.choice(_CODES[c][0]) for c in codes}
        hpi = ", ".join(phrases[c] for c in codes[:-1]) + (" and " if len(codes) > 1 else "") + phrases[codes[-1]]
        plan = "\n".join(f"{k}. {phrases[c].capitalize()}: {_CODES[c][1]}." for k, c in enumerate(codes, 1))
        note = (f"Reason for visit: follow-up.\nHistory of present illness: {age}-year-old {sex} with {hpi}. "
                f"No history of {negated}.\nAssessment and plan:\n{plan}")
        rows.append({"id": f"synth-{seed}-{i}", "note": note, "targets": codes})
    files = write_jsonl_splits(Path(out), rows, overwrite)
    return {"dataset": "icd_notes", "out": str(out), "n": n, "seed": seed, "files": files,
            "codes": SYNTH_CODES}
