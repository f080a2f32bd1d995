"""Out-of-template synthetic MedDec notes, for reporting only (``medprog data synth meddec-ood``).

A second generator, written independently of ``synth_meddec``, so that a tagger trained on one
generator can be scored on notes it was not built from. What differs: its own sentences
(``synth_meddec_ood_text``), section names, order and heading styles, list formats, hard line
wraps, abbreviations spelled out or not, misspellings, longer notes, decisions mid-clause,
distractor sentences that mention drugs and tests without deciding, de-identification tokens,
categories 10/11 (dropped on load), nested (overlapping) spans and spans that cut a word.
Seeded: the same ``seed`` writes the same files.

The set is never used for training, tuning or choosing defaults. It is written in the official
layout read by :func:`medprog.data.meddec.load_meddec`; every note is listed in
``splits/test.txt``. Some annotation files carry an annotator suffix in their id or hold a JSON
list of records, both allowed by that layout.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import textwrap
from pathlib import Path

from medprog.data import synth_meddec_ood_text as bank
from medprog.data.meddec import ANNOTATIONS_DIR, SPLITS_DIR, STATS_FILE, TEXTS_DIR, category_label

Span = tuple[int, int, int]

_MARK = re.compile(r"⟦(\d+)\||⟧")
_DEID = re.compile(r"\[\*\*.*?\*\*\]")
_WORD = re.compile(r"\b[a-z]{7,}\b")
_HEADINGS = ("{name}:\n", "{upper}:\n", "== {name} ==\n", "{name}: ")
_LISTS = ("{k}. {item}", "- {item}", "* {item}", "{k}) {item}")
_COMPLAINTS = ["SOB", "chest pain", "melena x2 days", "fever, dysuria", "fall at home", "confusion",
               "palpitations", "abd pain, vomiting", "leg redness and swelling", "lightheadedness"]
_COURSE_CATS = (1, 2, 3, 3, 4, 5, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11)


def unmark(marked: str) -> tuple[str, list[Span]]:
    """Marked text → (plain text, spans); ``⟦N|...⟧`` marks may nest. Spans skip edge whitespace."""
    pieces: list[str] = []
    spans: list[Span] = []
    stack: list[tuple[int, int]] = []
    length = pos = 0
    for m in _MARK.finditer(marked):
        pieces.append(marked[pos:m.start()])
        length += m.start() - pos
        pos = m.end()
        if m.group(1) is not None:
            stack.append((length, int(m.group(1))))
        elif stack:
            start, category = stack.pop()
            spans.append((start, length, category))
        else:
            raise ValueError(f"unbalanced ⟧ at {m.start()}: {marked[max(0, m.start() - 40):m.end()]!r}")
    if stack:
        raise ValueError(f"{len(stack)} mark(s) left open")
    pieces.append(marked[pos:])
    text = "".join(pieces)
    out = []
    for start, end, category in spans:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end:
            out.append((start, end, category))
    return text, sorted(out)


class _Slots(dict):
    """``str.format_map`` fields: fixed ones (pronouns, the current problem) or a fresh random pick.

    A field written with a capital (``{He}``, ``{Drug}``) is its lower-case value capitalised.
    """

    def __init__(self, rng: random.Random, fixed: dict[str, str], year: int) -> None:
        super().__init__(fixed)
        self.rng, self.year = rng, year
        self.problem: dict[str, list[str]] | None = None

    def fill(self, template: str) -> str:
        """The template filled; outside a problem's block, one random problem serves the sentence."""
        if self.problem is not None:
            return template.format_map(self)
        self.problem = self.rng.choice(bank.PROBLEMS)
        try:
            return template.format_map(self)
        finally:
            self.problem = None

    def __missing__(self, key: str) -> str:
        low = key[0].lower() + key[1:]
        value = str(dict.get(self, low)) if low in self else self._pick(low)
        return value[0].upper() + value[1:] if key[0].isupper() else value

    def _pick(self, key: str) -> str:
        rng = self.rng
        if key in ("prob", "drug", "test", "proc", "goal", "result"):
            return rng.choice((self.problem or rng.choice(bank.PROBLEMS))[key])
        if key == "date":
            return f"{self.year}-{rng.randint(1, 12)}-{rng.randint(1, 28)}"
        simple = {"consult": lambda: rng.choice(bank.CONSULTS), "dept": lambda: rng.choice(bank.DEPARTMENTS),
                  "clinic": lambda: self.fill(rng.choice(bank.CLINICS)),
                  "num": lambda: str(rng.randint(10, 9999)), "year": lambda: str(self.year - rng.randint(1, 30)),
                  "day": lambda: str(rng.randint(2, 9)), "days": lambda: rng.choice(("5", "7", "10", "14")),
                  "pt": lambda: rng.choice(("pt", "the patient", "patient"))}
        if key not in simple:
            raise KeyError(key)
        return simple[key]()


def _listing(rng: random.Random, items: list[str]) -> str:
    if rng.random() < 0.2:
        return ", ".join(items) + "."
    style = rng.choice(_LISTS)
    return "\n".join(style.format(k=k, item=item) for k, item in enumerate(items, 1))


def _template(rng: random.Random, categories: tuple[int, ...]) -> str:
    if rng.random() < 0.08:
        return rng.choice(bank.NESTED)
    return rng.choice(bank.DECISIONS[rng.choice(categories)])


def _decision(slots: _Slots, rng: random.Random, categories: tuple[int, ...]) -> str:
    return slots.fill(_template(rng, categories))


def _prose(slots: _Slots, rng: random.Random, n: int, cats: tuple[int, ...], distract: str) -> str:
    """``n`` sentences from distinct templates, about two in three decisions of ``cats``, the rest distractors."""
    used: list[str] = []
    for _ in range(3 * n):
        if len(used) == n:
            break
        template = _template(rng, cats) if rng.random() < 0.65 else rng.choice(bank.DISTRACTORS[distract])
        if template not in used:
            used.append(template)
    return " ".join(slots.fill(t) for t in used)


def _course(slots: _Slots, rng: random.Random, problems: list[dict]) -> str:
    style = rng.choice(("# {P}: ", "{k}) {P} - ", "{U}:\n", "#{P}\n"))
    blocks = []
    for k, problem in enumerate(problems, 1):
        slots.problem = problem
        name = rng.choice(problem["prob"])
        head = style.format(P=name[0].upper() + name[1:], U=name.upper(), k=k)
        blocks.append(head + _prose(slots, rng, rng.randint(2, 6), _COURSE_CATS, "course"))
    slots.problem = None
    who = slots.fill("{Pt}")
    intro = f"{who} is a {slots['age']} y/o {slots['sexword']} admitted with {rng.choice(problems[0]['prob'])}."
    return intro + "\n\n" + "\n\n".join(blocks)


def _discharge_meds(slots: _Slots, rng: random.Random, problems: list[dict]) -> str:
    items = rng.sample(bank.HOME_MEDS, rng.randint(2, 5))
    for problem in problems:
        drug = rng.choice(problem["drug"])
        forms = (f"⟦5|{drug}⟧ (NEW)", f"{drug}", f"⟦5|START {drug}⟧", f"{drug} -- ⟦5|new this admission⟧")
        items.append(rng.choice(forms))
    if rng.random() < 0.5:
        items.append(f"⟦5|STOP {rng.choice(bank.HOME_MEDS)}⟧")
    rng.shuffle(items)
    return _listing(rng, items)


def _diagnoses(rng: random.Random, problems: list[dict]) -> str:
    primary = rng.choice(problems[0]["prob"])
    return f"Primary: {primary}\nSecondary: " + ", ".join(rng.choice(p["prob"]) for p in problems[1:])


def _bodies(slots: _Slots, rng: random.Random, problems: list[dict]) -> dict[str, str]:
    first = problems[0]
    slots.problem = first
    history = ", ".join(slots.fill(p) for p in rng.sample(bank.PMH, 3))
    hpi_head = (f"{slots['age']} y/o {slots['sexword']} w/ h/o {history} "
                f"who presents with {rng.choice(_COMPLAINTS)}.")
    hpi = hpi_head + " " + _prose(slots, rng, rng.randint(3, 6), (1, 2, 3, 5, 7), "hpi")
    results = "\n".join(rng.sample(bank.DISTRACTORS["results"], 3)).format_map(slots)
    results += "\n" + _prose(slots, rng, rng.randint(1, 3), (7, 7, 2), "course")
    slots.problem = None
    followup = "\n".join(slots.fill(rng.choice(bank.FOLLOWUP[rng.choice((1, 1, 8))]) if rng.random() < 0.6
                                     else rng.choice(bank.DISTRACTORS["followup"])) for _ in range(rng.randint(1, 4)))
    dear = f"Dear {'Ms.' if slots['he'] == 'she' else 'Mr.'} [**Known lastname {rng.randint(100, 9999)}**],\n"
    return {
        "cc": rng.choice(_COMPLAINTS),
        "hpi": hpi,
        "pmh": _listing(rng, [slots.fill(p) for p in rng.sample(bank.PMH, rng.randint(3, 6))]),
        "social": " ".join(slots.fill(s) for s in rng.sample(bank.DISTRACTORS["social"], 2)),
        "home_meds": _listing(rng, rng.sample(bank.HOME_MEDS, rng.randint(3, 7))),
        "allergies": rng.choice(bank.ALLERGIES),
        "exam": " ".join(rng.sample(bank.DISTRACTORS["exam"], 2)),
        "results": results,
        "course": _course(slots, rng, problems),
        "procedures": _listing(rng, [rng.choice(p["proc"]) for p in problems[:2]]) if rng.random() < 0.6 else "None",
        "dc_meds": _discharge_meds(slots, rng, problems),
        "dc_dx": _diagnoses(rng, problems),
        "condition": rng.choice(bank.CONDITIONS),
        "instructions": dear + _prose(slots, rng, rng.randint(2, 5), (9, 9, 9, 5, 8, 2), "instructions"),
        "followup": followup,
    }


def _order(rng: random.Random) -> list[str]:
    order = ["cc", "hpi", "pmh", "social", "home_meds", "allergies", "exam", "results", "course", "procedures",
             "dc_meds", "dc_dx", "condition", "instructions", "followup"]
    if rng.random() < 0.4:  # results after the course
        order.remove("results")
        order.insert(order.index("course") + 1, "results")
    if rng.random() < 0.3:  # the course right after the HPI
        order.remove("course")
        order.insert(order.index("hpi") + 1, "course")
    if rng.random() < 0.3:
        order.remove("followup")
        order.insert(order.index("instructions"), "followup")
    return [s for s in order if s not in ("exam", "social", "procedures") or rng.random() < 0.7]


def _style(rng: random.Random, marked: str) -> str:
    """A note's writing habits: spelled-out abbreviations, misspellings, hard line wraps."""
    if rng.random() < 0.4:
        for pattern, full in bank.EXPANSIONS.items():
            marked = re.sub(pattern, full, marked)

    sloppy = rng.random() < 0.5

    def slip(m: re.Match) -> str:
        word = m.group(0)
        if word in bank.MISSPELLINGS and rng.random() < 0.3:
            return bank.MISSPELLINGS[word]
        if rng.random() < 0.015:
            i = rng.randint(1, len(word) - 3)
            return word[:i] + word[i + 1] + word[i] + word[i + 2:]
        return word

    parts = _DEID.split(marked)
    deids = _DEID.findall(marked)
    if sloppy:
        marked = "".join(_WORD.sub(slip, p) + (deids[k] if k < len(deids) else "") for k, p in enumerate(parts))
    if rng.random() < 0.5:
        width = rng.randint(60, 80)
        marked = "\n".join(textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False) if line else line
                           for line in marked.split("\n"))
    return marked


def compose(rng: random.Random, *, female: bool, age: int, year: int) -> str:
    """One marked note (``⟦N|...⟧`` around decisions)."""
    he, his = ("she", "her") if female else ("he", "his")
    sexword = rng.choice(("F", "woman", "female") if female else ("M", "man", "male"))
    slots = _Slots(rng, {"he": he, "his": his, "age": str(age), "sexword": sexword}, year)
    problems = rng.sample(bank.PROBLEMS, rng.randint(2, 5))
    bodies = _bodies(slots, rng, problems)
    heading = rng.choice(_HEADINGS)
    month, day = rng.randint(1, 12), rng.randint(1, 19)
    head = (f"Admission Date:  [**{year}-{month}-{day}**]     Discharge Date:   "
            f"[**{year}-{month}-{day + rng.randint(2, 9)}**]\n\nDate of Birth:  [**{year - age}-1-1**]"
            f"     Sex:   {'F' if female else 'M'}\n\nService: {rng.choice(('MEDICINE', 'CARDIOLOGY', 'SURGERY'))}\n")
    parts = [head]
    for key in _order(rng):
        name = rng.choice(bank.SECTIONS[key])
        parts.append(heading.format(name=name, upper=name.upper()) + bodies[key])
    parts.append(f"[**First Name8 (NamePattern2) {rng.randint(10, 999)}**] MD {rng.randint(1000, 99999)}")
    return _style(rng, "\n\n".join(parts) + "\n")


def cut_words(text: str, spans: list[Span], rng: random.Random, rate: float = 0.06) -> list[Span]:
    """Move an end (or start) of a few spans inside a word, as a hurried annotator does."""
    out = []
    for s, e, c in spans:
        if rng.random() < rate and e - s > 8 and text[e - 3:e].isalpha():
            e -= rng.randint(1, 2)
        elif rng.random() < rate and e - s > 8 and text[s:s + 3].isalpha():
            s += 1
        out.append((s, e, c))
    return out


def _note_record(note_id: str, text: str, spans: list[Span]) -> dict:
    anns = [{"annotation_id": f"T{k}", "start_offset": s, "end_offset": e, "category": category_label(c),
             "decision": text[s:e]} for k, (s, e, c) in enumerate(spans, 1)]
    return {"discharge_summary_id": note_id, "annotations": anns}


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty")
        for sub in (ANNOTATIONS_DIR, TEXTS_DIR, SPLITS_DIR):
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / STATS_FILE).unlink(missing_ok=True)
    for sub in (ANNOTATIONS_DIR, TEXTS_DIR, SPLITS_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)


def synth_meddec_ood(out_dir: str | Path, n: int = 60, seed: int = 0, *, overwrite: bool = False) -> dict:
    """Write ``n`` out-of-template notes in the MedDec layout under ``out_dir``; return a summary."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    out = Path(out_dir)
    _prepare(out, overwrite)
    rng = random.Random(f"meddec-ood:{seed}")
    ids: list[str] = []
    stats = ["SUBJECT_ID,HADM_ID,ROW_ID,ETHNICITY,LANGUAGE,GENDER"]
    counts: dict[int, int] = {}
    n_nested = n_chars = 0
    for k in range(n):
        base = f"{rng.randint(30000, 99999)}_{rng.randint(100000, 199999)}_{70000 + k}"
        note_rng = random.Random(f"meddec-ood:{seed}:{k}")
        female = note_rng.random() < 0.5
        text, spans = unmark(compose(note_rng, female=female, age=note_rng.randint(19, 96),
                                     year=note_rng.randint(2110, 2190)))
        spans = cut_words(text, spans, note_rng)
        note_id = base + ("-A2" if note_rng.random() < 0.15 else "")
        record = _note_record(note_id, text, spans)
        (out / TEXTS_DIR / f"{base}.txt").write_text(text, encoding="utf-8")
        body = [record] if note_rng.random() < 0.2 else record
        (out / ANNOTATIONS_DIR / f"{note_id}.json").write_text(json.dumps(body, indent=1), encoding="utf-8")
        if note_rng.random() < 0.95:  # a few notes have no demographics row
            stats.append(",".join([*base.split("_"), f'"{note_rng.choice(bank.RACES)}"',
                                   note_rng.choice(bank.LANGUAGES), "F" if female else "M"]))
        ids.append(base)
        for _, _, c in spans:
            counts[c] = counts.get(c, 0) + 1
        n_nested += sum(1 for a in spans for b in spans if a != b and a[0] <= b[0] and b[1] <= a[1])
        n_chars += len(text)
    (out / STATS_FILE).write_text("\n".join(stats) + "\n", encoding="utf-8")
    (out / SPLITS_DIR / "test.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    return {"out": str(out), "n_notes": n, "seed": seed, "splits": {"test": n},
            "n_spans": sum(counts.values()), "per_category": {str(c): counts[c] for c in sorted(counts)},
            "n_nested_pairs": n_nested, "mean_chars": round(n_chars / n)}
