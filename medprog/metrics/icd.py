"""ICD coding metrics: micro and macro F1 over codes, exact-set accuracy, per-stage recall.

Macro averages run over the codes with TP + FP + FN > 0 (codes seen in gold or predicted).
Codes are compared after normalisation (upper case, a dot after the third character).
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def normalize_code(code: str) -> str:
    c = str(code).strip().upper().replace(" ", "")
    if "." not in c and len(c) > 3:
        c = f"{c[:3]}.{c[3:]}"
    return c


def _set(codes: list[str] | None) -> set[str]:
    return {normalize_code(c) for c in codes or [] if str(c).strip()}


def _f1(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def icd_metrics(golds: list[list[str]], preds: list[list[str]],
                stages: dict[str, list[list[str]]] | None = None) -> dict[str, Any]:
    """Scores for aligned gold and predicted code lists; ``stages`` maps a stage name to the code
    lists present after that stage, for the share of gold codes still present (recall)."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    exact = 0
    for g, p in zip(golds, preds):
        gs, ps = _set(g), _set(p)
        exact += gs == ps
        for c in gs & ps:
            tp[c] += 1
        for c in ps - gs:
            fp[c] += 1
        for c in gs - ps:
            fn[c] += 1
    micro = _f1(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    codes = set(tp) | set(fp) | set(fn)
    per_code = [_f1(tp[c], fp[c], fn[c]) for c in codes]
    n_codes = len(per_code) or 1
    out: dict[str, Any] = {
        "micro_precision": micro[0], "micro_recall": micro[1], "micro_f1": micro[2],
        "macro_precision": sum(x[0] for x in per_code) / n_codes, "macro_recall": sum(x[1] for x in per_code) / n_codes,
        "macro_f1": sum(x[2] for x in per_code) / n_codes,
        "exact_set_accuracy": exact / len(golds) if golds else 0.0, "n": len(golds), "n_codes": len(codes),
    }
    n_gold = sum(len(_set(g)) for g in golds)
    for name, lists in (stages or {}).items():
        kept = sum(len(_set(g) & _set(s)) for g, s in zip(golds, lists))
        out[f"recall_after_{name}"] = kept / n_gold if n_gold else 0.0
    return out
