"""Notes with gold and predicted spans side by side, for ``report.html`` (span-tagging programs).

A program hands the report plain data (:class:`NotesView`): each note's text, its gold and
predicted spans with a label and a status — ``matched``, ``missed`` (gold only) or ``spurious``
(predicted only), decided by the program under its own metric's matching rule — and the note's
subgroups. This module only renders: a colour per label (a legend in the ``labels`` order),
missed spans boxed in red dashes, spurious ones underlined in red dots, every span numbered by
its label's legend entry and titled in full; all note text is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Literal

from pydantic import BaseModel, Field, model_validator

PALETTE = ("#fde2a7", "#cfe8fc", "#d4f4d2", "#f9d0e4", "#e3d7fb", "#ffd6c2", "#c9f1ef", "#f3f0b5",
           "#dcdcdc", "#e8c9a0", "#b9e4c9", "#f7c6c6")
"""Background colours, one per label in legend order (repeats past twelve)."""


class MarkedSpan(BaseModel):
    """A half-open character span ``[start, end)`` with its label and how it fared."""

    start: int = Field(ge=0)
    end: int
    label: str
    status: Literal["matched", "missed", "spurious"]

    @model_validator(mode="after")
    def _ordered(self) -> "MarkedSpan":
        if self.end <= self.start:
            raise ValueError(f"span end {self.end} must be after start {self.start}")
        return self


class NoteView(BaseModel):
    """One note as the report shows it."""

    id: str
    text: str
    gold: list[MarkedSpan] = Field(default_factory=list)
    predicted: list[MarkedSpan] = Field(default_factory=list)
    groups: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _inside(self) -> "NoteView":
        for span in (*self.gold, *self.predicted):
            if span.end > len(self.text):
                raise ValueError(f"note {self.id!r}: span [{span.start}, {span.end}) is outside the text "
                                 f"(length {len(self.text)})")
        return self


class NotesView(BaseModel):
    """What a span-tagging program gives the report: the legend order and the notes."""

    labels: list[str]
    notes: list[NoteView]


STYLE = """
.legend span{display:inline-block;margin:2px 8px 2px 0;padding:1px 6px;border-radius:3px;font-size:13px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px;margin-bottom:2em}
.pair h4{margin:.2em 0}
.text{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px;line-height:1.6;
 border:1px solid #ddd;padding:8px;background:#fff;overflow-wrap:anywhere}
.hl{border-radius:2px} .hl sup{font-size:9px;color:#444;margin-right:1px}
.missed{outline:2px dashed #c62828;outline-offset:1px}
.spurious{text-decoration:underline dotted #c62828 2px;text-underline-offset:3px}
.multi{box-shadow:inset 0 -3px 0 #555}
.worst td{font-weight:bold;background:#fff1f1}
"""


def _colours(labels: list[str], notes: list[NoteView]) -> dict[str, int]:
    order = list(labels) + sorted({s.label for n in notes for s in (*n.gold, *n.predicted)} - set(labels))
    return {label: k for k, label in enumerate(order)}


def highlight(text: str, spans: list[MarkedSpan], colours: dict[str, int]) -> str:
    """``text`` as escaped HTML with each span coloured by label; overlaps show the innermost span."""
    cuts = sorted({0, len(text), *(s.start for s in spans), *(s.end for s in spans)})
    starts = {s.start for s in spans}
    out = []
    for a, b in zip(cuts, cuts[1:]):
        piece = html.escape(text[a:b])
        active = [s for s in spans if s.start <= a and b <= s.end]
        if not active:
            out.append(piece)
            continue
        inner = min(active, key=lambda s: (s.end - s.start, s.label))
        k = colours[inner.label]
        classes = ["hl", inner.status] + (["multi"] if len(active) > 1 else [])
        title = html.escape("; ".join(f"{s.label} ({s.status})" for s in active), quote=True)
        mark = "".join(f"<sup>{colours[s.label] + 1}</sup>" for s in active if s.start == a) if a in starts else ""
        out.append(f'<span class="{" ".join(classes)}" style="background:{PALETTE[k % len(PALETTE)]}" '
                   f'title="{title}">{mark}{piece}</span>')
    return "".join(out)


def legend(colours: dict[str, int]) -> str:
    """Colour swatches numbered as the spans are, then what the red marks mean."""
    items = "".join(f'<span style="background:{PALETTE[k % len(PALETTE)]}">{k + 1} {html.escape(label)}</span>'
                    for label, k in colours.items())
    marks = ('<span class="missed">missed: in gold, not predicted</span>'
             '<span class="spurious">spurious: predicted, not in gold</span>'
             '<span class="multi">overlapping spans</span>')
    return f'<div class="legend">{items}</div><div class="legend">{marks}</div>'


def _note(note: NoteView, colours: dict[str, int], score: float | None) -> str:
    missed = sum(s.status == "missed" for s in note.gold)
    spurious = sum(s.status == "spurious" for s in note.predicted)
    facts = [f"score {score:.3f}"] if score is not None else []
    facts += [f"{k}={v}" for k, v in note.groups.items()]
    head = f"<h3>{html.escape(note.id)}</h3><p>{html.escape(' · '.join(facts))}</p>" if facts else \
        f"<h3>{html.escape(note.id)}</h3>"
    return (head + '<div class="pair">'
            f"<div><h4>Gold: {len(note.gold)} spans, {missed} missed</h4>"
            f'<div class="text">{highlight(note.text, note.gold, colours)}</div></div>'
            f"<div><h4>Predicted: {len(note.predicted)} spans, {spurious} spurious</h4>"
            f'<div class="text">{highlight(note.text, note.predicted, colours)}</div></div></div>')


def render_notes(view: NotesView, scores: dict[str, float] | None = None, limit: int = 10) -> str:
    """The notes section: legend, then up to ``limit`` notes (in the given order), gold beside predicted."""
    colours = _colours(view.labels, view.notes)
    shown = view.notes[:limit]
    scores = scores or {}
    body = "".join(_note(n, colours, scores.get(n.id)) for n in shown)
    return (f"<h2>Notes: gold beside predicted ({len(shown)} of {len(view.notes)})</h2>"
            + legend(colours) + body)
