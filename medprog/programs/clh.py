"""`clh`: ICD-10-CM coding the way coders work (Code Like Humans, EMNLP Findings 2025).

1. analyse: the model lists the lead terms of the note;
2. locate: retrieval over billable codes' titles and inclusion terms gives ``top_k``
   candidates per term; the model picks the plausible ones (one call per term, in parallel);
3. verify: per ICD-10-CM category, the model sees the candidates' tabular notes (inclusion
   terms, includes, excludes1/2, code first, use additional, code also) and keeps what
   applies (one call per category, in parallel);
4. assign: the model picks the final codes from the verified ones.

Every pick is a `Literal` over the codes the model was shown. Rules that need no model are
code, applied after assign: a code-first note pulls its etiology code (from the candidates),
no two codes in an Excludes1 relation (the earlier one wins), billable codes only.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import dspy

from medprog.data.icd_notes import load_icd_notes
from medprog.engines.accounting import step
from medprog.metrics.icd import icd_metrics
from medprog.programs.icd_index import (
    CodeIndex,
    billable_only,
    pull_code_first,
    resolve_excludes1,
    tabular_notes,
)
from medprog.programs.multiagent import narrowed_call, pmap, tracked
from medprog.programs.registry import Record, declare
from medprog.signatures.icd import AnalyseNote, AssignCodes, LocateCodes, VerifyCodes

STAGES = ("located", "verified", "assigned", "codes")


@functools.cache
def _shared_index(scope: tuple[str, ...] | None, index_dir: str | None) -> CodeIndex:
    """One index per scope per process, shared by every copy of the program."""
    return CodeIndex.build(scope, index_dir)


class CodeLikeHumans(dspy.Module):
    """Analyse → locate → verify → assign, with ICD-10-CM rules applied as code."""

    def __init__(self, top_k: int = 5, max_terms: int = 8, scope: list[str] | str | None = None,
                 index_dir: str | None = None, max_workers: int = 8) -> None:
        """``scope``: code prefixes the index covers (a list or "E11,N18"); None: all billable codes."""
        super().__init__()
        self.top_k, self.max_terms, self.max_workers = top_k, max_terms, max_workers
        if isinstance(scope, str):
            scope = [s.strip() for s in scope.split(",") if s.strip()]
        self.scope, self.index_dir = scope or None, index_dir
        self.analyse = dspy.Predict(AnalyseNote)
        self.locate = dspy.Predict(LocateCodes)
        self.verify = dspy.Predict(VerifyCodes)
        self.assign = dspy.Predict(AssignCodes)

    @property
    def index(self) -> CodeIndex:
        """The retrieval index (built or loaded from the cache on first use; shared, never copied)."""
        return _shared_index(tuple(self.scope) if self.scope else None, self.index_dir)

    def _pick(self, predictor: dspy.Predict, field: str, codes: list[str], **inputs: Any) -> list[str]:
        return list(dict.fromkeys(getattr(narrowed_call(predictor, field, codes, as_list=True, **inputs), field)))

    def forward(self, note: str) -> dspy.Prediction:
        with tracked() as usage:
            with step("analyse"):
                terms = [t.strip() for t in self.analyse(note=note).terms if t.strip()]
            terms = list(dict.fromkeys(terms))[: self.max_terms]
            hits = self.index.search(terms, self.top_k) if terms else []
            titles = {c.code: c.title for cands in hits for c in cands}
            pool = list(dict.fromkeys(c.code for cands in hits for c in cands))  # retrieval order

            def locate(term_hits: tuple[str, list]) -> list[str]:
                term, cands = term_hits
                with step("locate"):
                    return self._pick(self.locate, "codes", [c.code for c in cands], note=note, term=term,
                                      candidates=[f"{c.code}: {c.title}" for c in cands])

            located = list(dict.fromkeys(c for picked in pmap(locate, list(zip(terms, hits)), self.max_workers)
                                         for c in picked))
            groups: dict[str, list[str]] = {}
            for code in located:
                groups.setdefault(code[:3], []).append(code)

            def verify(codes: list[str]) -> list[str]:
                notes = "\n\n".join(tabular_notes(c).render() for c in codes)
                with step("verify"):
                    return self._pick(self.verify, "keep", codes, note=note, tabular_notes=notes)

            kept = {c for picked in pmap(verify, list(groups.values()), self.max_workers) for c in picked}
            verified = [c for c in located if c in kept]
            assigned: list[str] = []
            if verified:
                with step("assign"):
                    assigned = self._pick(self.assign, "codes", verified, note=note,
                                          candidates=[f"{c}: {titles.get(c) or tabular_notes(c).title}"
                                                      for c in verified])
            codes = pull_code_first(assigned, verified + [c for c in pool if c not in verified])
            codes, excluded = resolve_excludes1(codes)
            codes = billable_only(codes)
        return dspy.Prediction(codes=codes, terms=terms, located=located, verified=verified, assigned=assigned,
                               excluded=excluded, usage=usage)


# ------------------------------------------------------------------------- registry glue

def load(path: str | Path, split: str | None = None) -> list[dspy.Example]:
    """``{id, note, targets}`` jsonl: input ``note``; gold ``targets`` (ICD-10-CM codes)."""
    return [dspy.Example(id=n.id, note=n.note, targets=n.targets).with_inputs("note")
            for n in load_icd_notes(path, split)]


def to_record(example: dspy.Example, prediction: Any) -> Record:
    return {"id": example.id, "codes": list(prediction.codes), "targets": list(example.get("targets") or []),
            "terms": list(prediction.terms), "located": list(prediction.located),
            "verified": list(prediction.verified), "assigned": list(prediction.assigned),
            "excluded": list(prediction.excluded), "usage": prediction.get("usage") or {}}


def metrics(examples: list[dspy.Example], records: list[Record]) -> dict[str, Any]:
    """Micro/macro F1 and exact-set accuracy over all notes (a note without a record predicts
    nothing), and the share of gold codes still present after each stage."""
    by_id = {str(r["id"]): r for r in records}
    golds = [list(e.get("targets") or []) for e in examples]
    recs = [by_id.get(str(e.id)) or {} for e in examples]
    out = icd_metrics(golds, [r.get("codes") or [] for r in recs],
                      {s: [r.get(s) or [] for r in recs] for s in STAGES[:-1]})
    out["n_answered"] = sum(bool(r) for r in recs)
    return out


def score(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    return icd_metrics([list(example.get("targets") or [])], [list(prediction.codes)])["micro_f1"]


PROGRAM = declare(
    __name__,
    name="clh",
    task="ICD-10-CM coding of clinical notes",
    metric="micro/macro F1, exact-set accuracy, per-stage recall",
    build=CodeLikeHumans,
    defaults={"top_k": 5, "max_terms": 8, "scope": None},
)
