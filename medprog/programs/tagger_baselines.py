"""Two honest reference points for the MedDec tagger, in the shared predictions format.

* `no_tag_baseline` predicts nothing: the floor every tagger must clear (token F1 is not 0,
  because notes with no gold decisions score 1 when nothing is predicted).
* `keyword_baseline` learns a phrase lexicon from the training split's gold decision texts
  (each lower-cased phrase maps to its most frequent category) and tags every exact, whole-word
  occurrence in new notes, longest phrase first, non-overlapping within a category. It shows
  how far surface matching gets; it fails on unseen phrasings and tags look-alike text outside
  decisions.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Iterable

from medprog.data.meddec import SCORED_CATEGORIES, MedDecNote

Predictions = dict[str, list[tuple[int, int, int]]]
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def _tokens(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group().lower()) for m in _TOKEN_RE.finditer(text)]


def _phrase(text: str) -> tuple[str, ...]:
    words = [w for _, _, w in _tokens(text)]
    while words and not any(ch.isalnum() for ch in words[0]):
        words.pop(0)
    while words and not any(ch.isalnum() for ch in words[-1]):
        words.pop()
    return tuple(words)


def no_tag_baseline(notes: Iterable[MedDecNote]) -> Predictions:
    """Predict no decisions for every note."""
    return {n.id: [] for n in notes}


def keyword_baseline(train_notes: Iterable[MedDecNote], min_count: int = 1) -> Callable[[Iterable[MedDecNote]], Predictions]:
    """Learn ``phrase -> category`` from gold decisions; return a predictor for new notes.

    Phrases seen fewer than ``min_count`` times are dropped; category ties go to the lower number.
    """
    counts: dict[tuple[str, ...], Counter] = {}
    for note in train_notes:
        for d in note.decisions:
            if d.category in SCORED_CATEGORIES:
                phrase = _phrase(note.text[d.start:d.end])
                if phrase:
                    counts.setdefault(phrase, Counter())[d.category] += 1
    # index: first word -> [(phrase, category)], longest phrase first
    index: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    for phrase, cnt in counts.items():
        if sum(cnt.values()) < min_count:
            continue
        cat = min(cnt, key=lambda c: (-cnt[c], c))
        index.setdefault(phrase[0], []).append((phrase, cat))
    for entries in index.values():
        entries.sort(key=lambda pc: (-len(pc[0]), pc[0]))

    def predict(notes: Iterable[MedDecNote]) -> Predictions:
        out: Predictions = {}
        for note in notes:
            toks = _tokens(note.text)
            words = [w for _, _, w in toks]
            free_from = {c: 0 for c in SCORED_CATEGORIES}  # per category: first token not yet covered
            spans = []
            for i, w in enumerate(words):
                for phrase, cat in index.get(w, ()):
                    if i < free_from[cat]:
                        continue
                    k = len(phrase)
                    if tuple(words[i:i + k]) == phrase:
                        spans.append((toks[i][0], toks[i + k - 1][1], cat))
                        free_from[cat] = i + k
            out[note.id] = sorted(spans)
        return out

    return predict
