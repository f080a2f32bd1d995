"""`tagger`: clinical decision extraction as generative inline XML tagging (LAMAR, MedExACT 2026).

Constrained calls rewrite the discharge summary with the 9 MedDec decision tags, one window
of whole sentences at a time (``window_chars``; 0 sends the whole note in one call); the tags
are read back into exact character offsets (the constraint preserves the text). Windows keep
each call short — a small model need only find its place in a few sentences of source, not a
whole note — and a MedDec decision never crosses a sentence boundary.

The constraint is also bounded by what the training annotations contain (``tag_limits``,
derived at compile time by `fit_settings`): how many spans open at one position, how many are
open at once, how long a span runs. Where the model is unsure it cannot write what no annotated
note contains (seven tags opened on one word and closed a word later).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import dspy
import pydantic

from medprog.data.meddec import (
    CATEGORY_NAMES,
    CATEGORY_TAGS,
    SUBMISSION_FILE,
    Decision,
    MedDecNote,
    load_meddec,
    read_submission,
    write_submission,
)
from medprog.data.sentences import windows
from medprog.engines.tagging import Span, TaggedParseError, TagLimits, parse_tagged, render_tagged, word_layout
from medprog.programs.registry import EnsembleInputs, Record, declare
from medprog.signatures.tagging import TagDecisions

TAG_TO_CATEGORY = {t: i + 1 for i, t in enumerate(CATEGORY_TAGS)}


DEFAULT_WINDOW_CHARS = 1


def _limits(value: dict[str, Any] | None) -> TagLimits | None:
    """The ``tag_limits`` setting validated; a bad one is a one-line error naming the field."""
    if value is None:
        return None
    try:
        return TagLimits.model_validate(value)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"tag_limits.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


class Tagger(dspy.Module):
    """Tag every clinical decision in a discharge summary, window by window."""

    def __init__(self, window_chars: int = DEFAULT_WINDOW_CHARS, tag_limits: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.window_chars = int(window_chars)
        limits = _limits(tag_limits)
        self.tag = dspy.Predict(TagDecisions, **({"tag_limits": limits.model_dump()} if limits else {}))

    def forward(self, note: str) -> dspy.Prediction:
        if self.window_chars <= 0:
            return self.tag(note=note)
        parts, prev = [], 0
        for a, b in windows(note, self.window_chars):
            parts += [note[prev:a], str(self.tag(note=note[a:b]).tagged)]
            prev = b
        parts.append(note[prev:])
        return dspy.Prediction(tagged="".join(parts))


def note_spans(note: MedDecNote) -> list[Span]:
    return [Span(start=d.start, end=d.end, tag=d.tag) for d in note.decisions if d.tag]


def tagged_to_predictions(tagged: str) -> list[tuple[int, int, int]]:
    """Tagged text → ``[(start, end, category)]`` offsets into the untagged text."""
    _, spans = parse_tagged(tagged, list(CATEGORY_TAGS))
    return [(s.start, s.end, TAG_TO_CATEGORY[s.tag]) for s in spans]


def _example(n: MedDecNote) -> dspy.Example:
    return dspy.Example(id=n.id, note=n.text, tagged=render_tagged(n.text, note_spans(n)),
                        meddec=n.model_dump()).with_inputs("note")


def load(path: str | Path, split: str | None = None) -> list[dspy.Example]:
    """MedDec notes as examples: input ``note``, gold ``tagged`` (tags against the words)."""
    return [_example(n) for n in load_meddec(path, split)]


def train_examples(examples: list[dspy.Example], settings: dict[str, Any]) -> list[dspy.Example]:
    """What the predictor sees for these notes under ``settings``: one example per window.

    Windows are cut from each example's ``tagged`` output — gold or a pseudo-label alike — so
    a window's ``meddec`` note (id ``ID:K``, for metrics and rewards) holds the spans of that
    output inside the window, offsets shifted; the note's demographics are kept.
    """
    window_chars = int(settings.get("window_chars", DEFAULT_WINDOW_CHARS))
    if window_chars <= 0:
        return list(examples)
    out = []
    for ex in examples:
        text, spans = parse_tagged(str(ex.tagged), list(CATEGORY_TAGS))
        note = MedDecNote.model_validate(ex.meddec) if ex.get("meddec") else MedDecNote(id=str(ex.id), text=text)
        for k, (a, b) in enumerate(windows(text, window_chars)):
            inside = [Decision(start=s.start - a, end=s.end - a, category=TAG_TO_CATEGORY[s.tag])
                      for s in spans if a <= s.start and s.end <= b]
            out.append(_example(note.model_copy(update={"id": f"{note.id}:{k}", "text": text[a:b],
                                                        "decisions": inside})))
    return out


SPAN_LENGTH_MARGIN = 1.5
"""The longest span allowed is this many times the longest in training (in layout units)."""
COUNT_MARGIN = 1
"""Spans opening at one position, and open at once: this many more than the most in training."""


def derive_limits(examples: list[dspy.Example]) -> TagLimits:
    """Bounds from these examples' gold spans, with a small margin: most spans opening at one
    position and most open at once (plus `COUNT_MARGIN`), the longest span in words (times
    `SPAN_LENGTH_MARGIN`).

    Lengths count the units of the word layout (words, marks and the gaps between them), which a
    tokenizer's layout only merges (``" was"`` is one unit there), so the bounds never refuse a
    gold tagging. No lower bound: a span of two words may be one tokenizer unit.
    """
    per_position = at_once = longest = 0
    for ex in examples:
        text, spans = parse_tagged(str(ex.tagged), list(CATEGORY_TAGS))
        starts = [a for a, _ in word_layout(text).units]
        for s in spans:
            per_position = max(per_position, sum(o.start == s.start for o in spans))
            at_once = max(at_once, sum(o.start <= s.start < o.end for o in spans))
            longest = max(longest, sum(s.start <= a < s.end for a in starts))
    if not longest:
        return TagLimits()
    return TagLimits(max_opens_per_position=per_position + COUNT_MARGIN, max_open=at_once + COUNT_MARGIN,
                     max_span_units=math.ceil(SPAN_LENGTH_MARGIN * longest))


def fit_settings(examples: list[dspy.Example], settings: dict[str, Any]) -> dict[str, Any]:
    """Settings learnt from the training examples at compile time: the constraint's ``tag_limits``."""
    return {"tag_limits": derive_limits(train_examples(examples, settings)).model_dump()}


def to_record(example: dspy.Example, prediction: Any) -> Record:
    tagged = str(prediction.tagged)
    try:
        preds = tagged_to_predictions(tagged)
    except TaggedParseError:
        preds = []
    return {"id": example.id, "tagged": tagged, "predictions": preds}


def _notes(examples: list[dspy.Example]) -> list[MedDecNote]:
    return [MedDecNote.model_validate(e.meddec) for e in examples]


def metrics(examples: list[dspy.Example], records: list[Record]) -> dict[str, Any]:
    from medprog.metrics.meddec import score as meddec_score

    preds = {r["id"]: [tuple(p) for p in r.get("predictions") or []] for r in records}
    return meddec_score(_notes(examples), preds)


def score(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    """Per-note base score (span F1 + token F1) / 2, for optimizers."""
    rec = to_record(example, prediction)
    return float(metrics([example], [rec])["base"])


def extras(out: Path, examples: list[dspy.Example], records: list[Record], result: dict[str, Any]) -> None:
    """Official submission file and a per-category bar chart beside the generic outputs."""
    from medprog.programs.tagger_outputs import plot_per_category

    write_submission(out / SUBMISSION_FILE, {r["id"]: [tuple(p) for p in r.get("predictions") or []]
                                             for r in records})
    plot_per_category(result, out / "per_category.png")


def report_notes(examples: list[dspy.Example], records: list[Record]) -> dict[str, Any]:
    """Gold and predicted spans per note for ``report.html``, matched as span F1 matches them
    (same category, same refined lower-cased text); statuses: matched, missed, spurious."""
    from medprog.metrics.meddec import note_groups, refine_span

    labels = [CATEGORY_NAMES[c] for c in range(1, len(CATEGORY_TAGS) + 1)]
    predicted = {r["id"]: r.get("predictions") or [] for r in records}
    notes = []
    for note in _notes(examples):
        def key(s: int, e: int, c: int, text: str = note.text) -> tuple[int, str] | None:
            r = refine_span(text, s, e)
            return (c, text[r[0]:r[1]].lower()) if r else None

        gold = [d.as_span() for d in note.decisions if d.tag]
        pred = [(int(s), int(e), int(c)) for s, e, c in predicted.get(note.id, [])
                if 0 <= s < e <= len(note.text) and c in TAG_TO_CATEGORY.values()]
        gold_keys, pred_keys = {key(*g) for g in gold} - {None}, {key(*p) for p in pred} - {None}
        notes.append({
            "id": note.id, "text": note.text, "groups": note_groups(note),
            "gold": [{"start": s, "end": e, "label": labels[c - 1],
                      "status": "matched" if key(s, e, c) in pred_keys else "missed"} for s, e, c in gold],
            "predicted": [{"start": s, "end": e, "label": labels[c - 1],
                           "status": "matched" if key(s, e, c) in gold_keys else "spurious"} for s, e, c in pred],
        })
    return {"labels": labels, "notes": notes}


PROGRAM = declare(
    __name__,
    name="tagger",
    task="clinical decision tagging (MedDec / MedExACT)",
    metric="span F1, token F1, worst subgroup, overall",
    build=Tagger,
    defaults={"window_chars": DEFAULT_WINDOW_CHARS, "tag_limits": None},
    reward_metrics=("span_f1", "token_f1"),
    ensemble=EnsembleInputs(submission=SUBMISSION_FILE, read=read_submission, write=write_submission, gold=_notes),
)
