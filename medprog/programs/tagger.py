"""`tagger`: clinical decision extraction as generative inline XML tagging (LAMAR, MedExACT 2026).

One constrained call rewrites the discharge summary with the 9 MedDec decision tags;
the tags are read back into exact character offsets (the constraint preserves the text).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dspy

from medprog.data.meddec import CATEGORY_TAGS, MedDecNote, load_meddec, write_submission
from medprog.engines.tagging import Span, TaggedParseError, parse_tagged, render_tagged
from medprog.programs.registry import ProgramInfo, Record
from medprog.signatures.tagging import TagDecisions

TAG_TO_CATEGORY = {t: i + 1 for i, t in enumerate(CATEGORY_TAGS)}


class Tagger(dspy.Module):
    """Tag every clinical decision in a discharge summary."""

    def __init__(self) -> None:
        super().__init__()
        self.tag = dspy.Predict(TagDecisions)

    def forward(self, note: str) -> dspy.Prediction:
        return self.tag(note=note)


def note_spans(note: MedDecNote) -> list[Span]:
    return [Span(start=d.start, end=d.end, tag=d.tag) for d in note.decisions if d.tag]


def tagged_to_predictions(tagged: str) -> list[tuple[int, int, int]]:
    """Tagged text → ``[(start, end, category)]`` offsets into the untagged text."""
    _, spans = parse_tagged(tagged, list(CATEGORY_TAGS))
    return [(s.start, s.end, TAG_TO_CATEGORY[s.tag]) for s in spans]


def load(path: str | Path, split: str | None = None) -> list[dspy.Example]:
    """MedDec notes as examples: input ``note``, gold ``tagged`` (tags against the words)."""
    notes = load_meddec(path, split)
    return [
        dspy.Example(id=n.id, note=n.text, tagged=render_tagged(n.text, note_spans(n)), meddec=n.model_dump())
        .with_inputs("note")
        for n in notes
    ]


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
    from medprog.metrics.meddec import plot_per_category

    write_submission(out / "predictions.json", {r["id"]: [tuple(p) for p in r.get("predictions") or []]
                                                for r in records})
    plot_per_category(result, out / "per_category.png")


PROGRAM = ProgramInfo(
    name="tagger",
    task="clinical decision tagging (MedDec / MedExACT)",
    metric="span F1, token F1, worst subgroup, overall",
    build=Tagger,
    load=load,
    to_record=to_record,
    metrics=metrics,
    score=score,
    extras=extras,
)
