"""Diagnosis-set precision, recall and F1 (AI Hospital), after normalisation.

A diagnosis name is normalised by case folding, dropping punctuation and collapsing spaces;
a name that equals an ICD-10-CM code title (via ``simple-icd-10-cm``, when installed) is
replaced by its code, so "Pneumonia, unspecified organism" and "pneumonia unspecified
organism" both count as J18.9. Reference strings are split on newlines and list separators
(; ； 、 ，) with enumerators ("1.", "（2）") removed.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

_ENUM = re.compile(r"^\s*(?:[（(]\s*\d+\s*[)）]|\d+\s*[.、)）:：]|[-*•])\s*")
_ITEMS = re.compile(r"[\n;；]+|\s+(?=\d+\s*[.、)）]|[（(]\s*\d+\s*[)）])")
_LIST = re.compile(r"[、，]+")


def split_diagnoses(text: str | list[str]) -> list[str]:
    """A reference diagnosis string (or list) as a list of diagnosis names."""
    items = [str(t) for t in text] if isinstance(text, list) else _ITEMS.split(text or "")
    out = []
    for item in items:
        for part in _LIST.split(_ENUM.sub("", item)):
            part = part.strip()
            if part:
                out.append(part)
    return out


def _clean(name: str) -> str:
    chars = [" " if unicodedata.category(c)[0] in "PSZ" else c for c in unicodedata.normalize("NFKC", name).casefold()]
    return " ".join("".join(chars).split())


@functools.cache
def _icd_titles() -> dict[str, str]:
    """Normalised ICD-10-CM title → code (categories and subcategories; first code wins)."""
    try:
        import simple_icd_10_cm as icd
    except ImportError:  # optional: without it names are compared as text
        return {}
    titles: dict[str, str] = {}
    for code in icd.get_all_codes(with_dots=True):
        if icd.is_category_or_subcategory(code):
            titles.setdefault(_clean(icd.get_description(code)), code)
    return titles


def normalize_diagnosis(name: str, *, icd: bool = True) -> str:
    """The comparison key of a diagnosis name: an ICD-10-CM code where the title matches, else clean text."""
    clean = _clean(name)
    if icd:
        code = _icd_titles().get(clean)
        if code:
            return code
    return clean


def diagnosis_sets(names: list[str], *, icd: bool = True) -> set[str]:
    return {k for k in (normalize_diagnosis(n, icd=icd) for n in names) if k}


def prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def diagnosis_prf(golds: list[list[str]], preds: list[list[str]], *, icd: bool = True) -> dict[str, Any]:
    """Micro (pooled) and macro (mean over cases) precision, recall and F1 of diagnosis sets."""
    tp = n_pred = n_gold = 0
    per_case = []
    for g, p in zip(golds, preds):
        gs, ps = diagnosis_sets(g, icd=icd), diagnosis_sets(p, icd=icd)
        hit = len(gs & ps)
        tp, n_pred, n_gold = tp + hit, n_pred + len(ps), n_gold + len(gs)
        per_case.append(prf(hit, len(ps), len(gs)))
    micro = prf(tp, n_pred, n_gold)
    n = len(per_case) or 1
    macro = tuple(sum(c[i] for c in per_case) / n for i in range(3))
    return {"precision": micro[0], "recall": micro[1], "f1": micro[2],
            "macro_precision": macro[0], "macro_recall": macro[1], "macro_f1": macro[2], "n": len(per_case)}


JUDGE_POINTS = {"A": 4, "B": 3, "C": 2, "D": 1}
JUDGE_ITEMS = ("symptoms", "tests", "diagnosis", "basis", "treatment")


def judge_summary(grades: list[dict[str, str]]) -> dict[str, float]:
    """Mean points (A–D → 4…1) per judged item and overall, from per-case letter grades."""
    out: dict[str, float] = {}
    for item in JUDGE_ITEMS:
        pts = [JUDGE_POINTS[g[item]] for g in grades if g.get(item) in JUDGE_POINTS]
        out[f"judge_{item}"] = sum(pts) / len(pts) if pts else 0.0
    out["judge_mean"] = sum(out[f"judge_{i}"] for i in JUDGE_ITEMS) / len(JUDGE_ITEMS)
    return out
