"""AI Hospital signatures: doctor, patient, examiner, host, and the report judge."""

from __future__ import annotations

from typing import Literal

import dspy
from pydantic import BaseModel, Field

from medprog.signatures.base import Signature

Grade = Literal["A", "B", "C", "D"]
MAX_DISPUTES = 3


class DiagnosisReport(BaseModel):
    """The doctor's structured report at the end of a consultation."""

    symptoms: list[str] = Field(max_length=10)
    tests: list[str] = Field(max_length=10, description="examinations and tests with their results")
    diagnoses: list[str] = Field(max_length=5)
    basis: str = Field(description="diagnostic basis")
    treatment: str = Field(description="treatment plan")


class DisputePoint(BaseModel):
    point: str = Field(description="what the doctors disagree about")
    ask: Literal["patient", "examiner", "none"] = Field(description="who could settle it")
    question: str = Field(description="the question to ask them")


class HostJudgement(BaseModel):
    symptoms: list[str] = Field(description="merged symptoms from all doctors")
    tests: list[str] = Field(description="merged examinations and results from all doctors")
    verdict: Literal["agree", "continue"]
    disputes: list[DisputePoint] = Field(max_length=MAX_DISPUTES, description="at most 3 points of disagreement")


class JudgeGrades(BaseModel):
    symptoms: Grade
    tests: Grade
    diagnosis: Grade
    basis: Grade
    treatment: Grade


class DoctorTurn(Signature):
    """You are a doctor in an outpatient consultation. Each turn do exactly one thing: ask the
    patient one question, or order one examination or test, or finish when you can diagnose."""

    perspective: str = dspy.InputField(desc="your specialty or way of working")
    dialogue: str = dspy.InputField(desc="the consultation so far")
    turns_left: int = dspy.InputField()
    action: Literal["ask", "test", "finish"] = dspy.OutputField()
    text: str = dspy.OutputField(desc="the question, or the examination or test to order; empty to finish")


class PatientReply(Signature):
    """You are the patient. Answer the doctor's question briefly in your own words and speaking
    style, only from your profile and history. If the answer is not there, say you don't know.
    Never name a diagnosis and never report test results."""

    persona: str = dspy.InputField()
    history: str = dspy.InputField()
    dialogue: str = dspy.InputField()
    question: str = dspy.InputField()
    reply: str = dspy.OutputField()


class ExaminerReply(Signature):
    """You are the examiner. Report the result of the requested examination or test exactly as it
    appears in the records. If the records do not contain it, set found to false."""

    examinations: str = dspy.InputField(desc="physical examination and test records")
    request: str = dspy.InputField()
    found: bool = dspy.OutputField()
    result: str = dspy.OutputField()


class WriteReport(Signature):
    """You are the doctor. The consultation is over: write your diagnostic report from the dialogue."""

    perspective: str = dspy.InputField()
    dialogue: str = dspy.InputField()
    report: DiagnosisReport = dspy.OutputField()


class HostReview(Signature):
    """You host a consultation among doctors. Merge their symptoms and tests, and judge whether
    their diagnoses agree. If not, list at most 3 points of disagreement and whom to ask."""

    reports: list[DiagnosisReport] = dspy.InputField(desc="the doctors' current reports, in doctor order")
    findings: str = dspy.InputField(desc="answers already gathered on earlier disputes")
    judgement: HostJudgement = dspy.OutputField()


class ReviseReport(Signature):
    """You are a doctor in a joint consultation. Revise your report in light of your colleagues'
    reports, the host's merged findings and the disputed points."""

    perspective: str = dspy.InputField()
    own_report: DiagnosisReport = dspy.InputField()
    colleague_reports: list[DiagnosisReport] = dspy.InputField()
    findings: str = dspy.InputField(desc="merged symptoms and tests, disputes, and the answers to them")
    report: DiagnosisReport = dspy.OutputField()


class HostFinalReport(Signature):
    """You host the consultation. Write the final joint report from the doctors' reports and the findings."""

    reports: list[DiagnosisReport] = dspy.InputField()
    findings: str = dspy.InputField()
    report: DiagnosisReport = dspy.OutputField()


class JudgeReport(Signature):
    """Grade the doctor's report against the reference medical record on five items: symptoms,
    examinations and tests, diagnosis, diagnostic basis, treatment. A: complete and correct;
    B: mostly correct; C: partly correct; D: wrong or missing."""

    reference: str = dspy.InputField(desc="the patient's medical record")
    report: DiagnosisReport = dspy.InputField()
    grades: JudgeGrades = dspy.OutputField()
