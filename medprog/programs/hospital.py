"""`hospital`: multi-turn diagnostic consultation (AI Hospital, with MVME collaborative mode).

Agents: the doctor asks one thing per turn or orders one test, for at most ``max_turns``
turns, then writes a structured `DiagnosisReport`; the patient answers only from its persona
and history; the examiner reports only from the examination and test sections ("No
abnormality found." when the record lacks the test: ``found`` is a constrained boolean, the
text is code). The doctor never sees the record.

``mode="collaborative"``: ``doctors`` doctors consult independently (in parallel, or read from
``precomputed`` outputs of earlier runs); for at most ``rounds`` rounds the host merges their
symptoms and tests and judges agreement (``agree``, or ``continue`` with at most 3 dispute
points), asks the patient or examiner about each point, and the doctors revise (in
parallel); the host writes the final report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import dspy

from medprog.data.hospital import PatientCase, load_hospital
from medprog.engines.accounting import step
from medprog.metrics.diagnosis import diagnosis_prf, judge_summary, split_diagnoses
from medprog.programs.multiagent import pmap, tracked
from medprog.programs.registry import Record, declare
from medprog.signatures.hospital import (
    MAX_DISPUTES,
    DiagnosisReport,
    DoctorTurn,
    ExaminerReply,
    HostFinalReport,
    HostReview,
    JudgeReport,
    PatientReply,
    ReviseReport,
    WriteReport,
)

NOT_FOUND = "No abnormality found."
PERSPECTIVES = ["general practitioner", "internal medicine specialist", "specialist of the patient's complaint",
                "emergency physician", "family physician"]


def render_dialogue(dialogue: list[dict[str, str]]) -> str:
    return "\n".join(f"{t['role'].capitalize()}: {t['text']}" for t in dialogue)


def read_precomputed(paths: Sequence[str | Path]) -> list[dict[str, dict[str, Any]]]:
    """Earlier consultation outputs, one mapping ``case id → {dialogue, report}`` per file.

    A file is JSONL: either this program's records or evaluation lines holding them under ``record``.
    """
    out = []
    for path in paths:
        by_id: dict[str, dict[str, Any]] = {}
        for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            rec = row.get("record", row) if isinstance(row, dict) else None
            if isinstance(rec, dict) and rec.get("report"):
                by_id[str(row.get("id", rec.get("id")))] = {
                    "dialogue": rec.get("dialogue") or [], "report": DiagnosisReport.model_validate(rec["report"])}
        out.append(by_id)
    return out


class Hospital(dspy.Module):
    """A consultation (single doctor) or a collaborative consultation (several doctors and a host)."""

    def __init__(self, mode: Literal["single", "collaborative"] = "single", doctors: int = 3, max_turns: int = 10,
                 rounds: int = 3, precomputed: list[str] | None = None, max_workers: int = 8) -> None:
        super().__init__()
        if mode not in ("single", "collaborative"):
            raise ValueError(f"hospital: unknown mode {mode!r}; expected single or collaborative")
        self.mode, self.max_turns, self.rounds, self.max_workers = mode, max_turns, rounds, max_workers
        self.precomputed = read_precomputed(precomputed) if precomputed else []
        self.doctors = len(self.precomputed) or max(1, doctors)
        self.doctor = dspy.Predict(DoctorTurn)
        self.patient = dspy.Predict(PatientReply)
        self.examiner = dspy.Predict(ExaminerReply)
        self.write_report = dspy.Predict(WriteReport)
        self.host = dspy.Predict(HostReview)
        self.revise = dspy.Predict(ReviseReport)
        self.final = dspy.Predict(HostFinalReport)

    # agents -----------------------------------------------------------------------------
    def ask_patient(self, case: PatientCase, dialogue: list[dict[str, str]], question: str) -> str:
        with step("patient"):
            return self.patient(persona=case.persona(), history=case.history(), dialogue=render_dialogue(dialogue),
                                question=question).reply

    def ask_examiner(self, case: PatientCase, request: str) -> str:
        with step("examiner"):
            out = self.examiner(examinations=case.examinations(), request=request)
        return out.result if out.found else NOT_FOUND

    def consult(self, case: PatientCase, perspective: str) -> dict[str, Any]:
        """One doctor's consultation: at most ``max_turns`` actions, then the report."""
        dialogue = [{"role": "patient", "text": case.profile.complaint or case.record.chief_complaint}]
        for turn in range(self.max_turns):
            with step("doctor"):
                act = self.doctor(perspective=perspective, dialogue=render_dialogue(dialogue),
                                  turns_left=self.max_turns - turn)
            if act.action == "finish":
                break
            dialogue.append({"role": "doctor", "text": act.text})
            if act.action == "ask":
                dialogue.append({"role": "patient", "text": self.ask_patient(case, dialogue, act.text)})
            else:
                dialogue.append({"role": "examiner", "text": self.ask_examiner(case, act.text)})
        with step("report"):
            report = self.write_report(perspective=perspective, dialogue=render_dialogue(dialogue)).report
        return {"perspective": perspective, "dialogue": dialogue, "report": report, "source": "live"}

    def _consultations(self, case: PatientCase) -> list[dict[str, Any]]:
        perspectives = [PERSPECTIVES[i % len(PERSPECTIVES)] for i in range(self.doctors)]
        done: dict[int, dict[str, Any]] = {}
        for i, by_id in enumerate(self.precomputed):
            if case.id in by_id:
                done[i] = {"perspective": perspectives[i], **by_id[case.id], "source": "precomputed"}
        todo = [i for i in range(self.doctors) if i not in done]  # a case missing from a file runs live
        for i, c in zip(todo, pmap(lambda i: self.consult(case, perspectives[i]), todo, self.max_workers)):
            done[i] = c
        return [done[i] for i in range(self.doctors)]

    def collaborate(self, case: PatientCase) -> dict[str, Any]:
        consultations = self._consultations(case)
        reports: list[DiagnosisReport] = [c["report"] for c in consultations]
        findings: list[str] = []
        rounds: list[dict[str, Any]] = []
        for r in range(self.rounds):
            with step("host"):
                j = self.host(reports=reports, findings="\n".join(findings)).judgement
            disputes = list(j.disputes)[:MAX_DISPUTES]
            rounds.append({"round": r + 1, "verdict": j.verdict, "disputes": [d.model_dump() for d in disputes]})
            if j.verdict == "agree":
                break
            findings.append(f"Round {r + 1}. Merged symptoms: {'; '.join(j.symptoms)}. "
                            f"Merged tests: {'; '.join(j.tests)}.")

            def settle(d):
                if d.ask == "patient":
                    return self.ask_patient(case, [], d.question)
                if d.ask == "examiner":
                    return self.ask_examiner(case, d.question)
                return ""

            for d, answer in zip(disputes, pmap(settle, disputes, self.max_workers)):
                findings.append(f"Dispute: {d.point}" + (f" — asked the {d.ask} \"{d.question}\": {answer}"
                                                         if d.ask != "none" else ""))
                rounds[-1].setdefault("answers", []).append(answer)
            text = "\n".join(findings)

            def revise(i: int) -> DiagnosisReport:
                with step("revise"):
                    return self.revise(perspective=consultations[i]["perspective"], own_report=reports[i],
                                       colleague_reports=[x for k, x in enumerate(reports) if k != i],
                                       findings=text).report

            reports = pmap(revise, range(len(reports)), self.max_workers)
        with step("host_final"):
            final = self.final(reports=reports, findings="\n".join(findings)).report
        return {"report": final, "consultations": consultations, "rounds": rounds, "doctor_reports": reports}

    def forward(self, case: dict[str, Any] | PatientCase) -> dspy.Prediction:
        case = case if isinstance(case, PatientCase) else PatientCase.model_validate(case)
        with tracked() as usage:
            if self.mode == "single":
                out = self.consult(case, PERSPECTIVES[0])
            else:
                out = self.collaborate(case)
        return dspy.Prediction(**out, mode=self.mode, usage=usage)


# ------------------------------------------------------------------------- registry glue

def load(path: str | Path, split: str | None = None) -> list[dspy.Example]:
    """AI Hospital patients.json: input ``case``; gold ``reference`` (diagnosis names)."""
    return [dspy.Example(id=c.id, case=c.model_dump(), reference=split_diagnoses(c.reference_diagnosis))
            .with_inputs("case") for c in load_hospital(path, split)]


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def to_record(example: dspy.Example, prediction: Any) -> Record:
    """One line per case: the whole dialogue (or consultations and rounds) and the report."""
    rec = {"id": example.id, "mode": prediction.get("mode"), "report": _dump(prediction.report),
           "diagnoses": list(prediction.report.diagnoses), "reference": list(example.get("reference") or []),
           "usage": prediction.get("usage") or {}}
    for key in ("dialogue", "consultations", "rounds"):
        if prediction.get(key) is not None:
            rec[key] = _dump(prediction.get(key))
    return rec


def metrics(examples: list[dspy.Example], records: list[Record]) -> dict[str, Any]:
    """Diagnosis-set P/R/F1 over all cases (a case without a record counts as no diagnosis)."""
    by_id = {str(r["id"]): r for r in records}
    golds = [list(e.get("reference") or []) for e in examples]
    preds = [list((by_id.get(str(e.id)) or {}).get("diagnoses") or []) for e in examples]
    out = diagnosis_prf(golds, preds)
    out["n_answered"] = sum(str(e.id) in by_id for e in examples)
    calls = [float((r.get("usage") or {}).get("calls", 0)) for r in records]
    out["calls_per_case"] = sum(calls) / len(calls) if calls else 0.0
    return out


def score(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    return diagnosis_prf([list(example.get("reference") or [])], [list(prediction.report.diagnoses)])["f1"]


def judge(examples: list[dspy.Example], records: list[Record], max_workers: int = 8) -> dict[str, float]:
    """Optional LLM-judge scores (five items, A–D → 4…1) with the LM configured in dspy's context."""
    by_id = {str(e.id): e for e in examples}
    grader = dspy.Predict(JudgeReport)

    def grade(rec: Record) -> dict[str, str]:
        case = PatientCase.model_validate(by_id[str(rec["id"])].case)
        reference = "\n".join(f"{k}: {v}" for k, v in case.record.model_dump().items() if v)
        with step("judge"):
            return grader(reference=reference, report=DiagnosisReport.model_validate(rec["report"])).grades.model_dump()

    usable = [r for r in records if str(r["id"]) in by_id and r.get("report")]
    return judge_summary(pmap(grade, usable, max_workers))


PROGRAM = declare(
    __name__,
    name="hospital",
    task="diagnostic consultation (AI Hospital / MVME)",
    metric="diagnosis set precision, recall, F1",
    build=Hospital,
    defaults={"mode": "single", "doctors": 3, "max_turns": 10, "rounds": 3},
)
