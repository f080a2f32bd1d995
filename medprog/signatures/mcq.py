"""Medical multiple-choice QA signatures (MDAgents).

Answer fields are typed with a placeholder `Letter`; programs narrow them per question to the
question's own option letters (`with_choices(sig, "answer", letters)`), so 4-option,
5-option and yes/no/maybe questions are all constrained to valid letters.
"""

from __future__ import annotations

from typing import Annotated, Literal

import dspy
from pydantic import BaseModel, Field

from medprog.signatures.base import Signature

Letter = Literal["A", "B", "C", "D", "E"]
Complexity = Literal["basic", "intermediate", "advanced"]

# Fields that must say something get a minimum length (under the JSON constraint a small model
# otherwise answers "A" in every string) and a maximum that keeps the whole output within the
# completion budget (an unbounded expert list ran a 135M model past 1,024 tokens).
Name = Annotated[str, Field(min_length=3, max_length=60)]
Sentence = Annotated[str, Field(min_length=12, max_length=200)]
Reasoning = Annotated[str, Field(min_length=40, max_length=400)]


class Expert(BaseModel):
    role: Name = Field(description="the expert's specialty, e.g. Cardiologist")
    description: Sentence = Field(description="what this expert contributes to the question, in a sentence")
    hierarchy: Name = Field(description='"independent", or the role this expert reports to')


class Opinion(BaseModel):
    """One expert's answer, as shown to an arbitrator, moderator or colleague."""

    expert: str
    reasoning: str
    answer: str


class TeamMember(BaseModel):
    role: Name = Field(description="a medical specialty, e.g. Radiologist")
    expertise: Name = Field(description="what this member knows about, in a few words")


class Team(BaseModel):
    name: Name = Field(description="what the team does, e.g. Initial Assessment Team")
    lead: TeamMember
    members: list[TeamMember] = Field(max_length=3)


class TeamPlan(BaseModel):
    """An initial assessment team first, specialist teams, a final review and decision team last."""

    initial_assessment: Team
    specialist_teams: list[Team] = Field(max_length=4)
    final_review: Team


class TeamReport(BaseModel):
    team: str
    report: str


class AnswerChoice(Signature):
    """Answer the medical multiple-choice question with the letter of the single best option."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    answer: Letter = dspy.OutputField(desc="the letter of the best option")


class ReasonThenChoose(Signature):
    """Answer the medical multiple-choice question. First reason step by step: what the question
    describes, what each option would imply, which one fits best. Then give that option's letter."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    reasoning: Reasoning = dspy.OutputField(desc="step-by-step reasoning, in sentences")
    answer: Letter = dspy.OutputField(desc="the letter of the best option")


class AssessComplexity(Signature):
    """Judge how complex this medical question is. basic: one clinician can answer it;
    intermediate: specialists should discuss it; advanced: it needs multidisciplinary teams
    across departments."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    complexity: Complexity = dspy.OutputField()


class RecruitExperts(Signature):
    """Recruit medical experts with distinct specialties who together can answer the question.
    Give each a role, what they contribute, and whom they report to ("independent" if nobody)."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    n_experts: int = dspy.InputField(desc="how many experts to recruit")
    experts: list[Expert] = dspy.OutputField(max_length=5)


class ExpertAnswer(Signature):
    """You are the medical expert named in `role`. Think step by step about the question, taking
    your colleagues' messages into account if there are any, and choose one option."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    role: str = dspy.InputField()
    discussion: str = dspy.InputField(desc="messages from colleagues; empty before any discussion")
    reasoning: Reasoning = dspy.OutputField(desc="why, in sentences")
    answer: Letter = dspy.OutputField()


class Arbitrate(Signature):
    """You are the arbitrator. Weigh the independent experts' answers and reasoning and give the
    final answer."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    opinions: list[Opinion] = dspy.InputField()
    reasoning: Reasoning = dspy.OutputField(desc="why, in sentences")
    answer: Letter = dspy.OutputField()


class DecideToSpeak(Signature):
    """You are expert `me` in a panel discussion. Given everyone's current answers and the
    messages you received, decide whether you want to say something, and to which colleagues
    (by number). Only speak if you have something that could change an answer."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    me: str = dspy.InputField()
    colleagues: str = dspy.InputField(desc="numbered colleagues with their current answers")
    inbox: str = dspy.InputField(desc="messages sent to you so far")
    speak: bool = dspy.OutputField()
    to: list[int] = dspy.OutputField(desc="colleague numbers to address")
    message: str = dspy.OutputField()


class Moderate(Signature):
    """You are the moderator of the panel. Read the experts' final answers after their discussion
    and give the panel's final answer."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    opinions: list[Opinion] = dspy.InputField()
    reasoning: Reasoning = dspy.OutputField(desc="why, in sentences")
    answer: Letter = dspy.OutputField()


class PlanTeams(Signature):
    """Organise multidisciplinary teams to answer the question: an initial assessment team,
    specialist teams, and a final review and decision team. Each team has a lead and members."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    n_specialist_teams: int = dspy.InputField()
    team_size: int = dspy.InputField(desc="members per team, besides the lead")
    plan: TeamPlan = dspy.OutputField()


class AssignTasks(Signature):
    """You lead this team. Considering the earlier teams' reports, give each member one task,
    in the order the members are listed."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    team: Team = dspy.InputField()
    earlier_reports: list[TeamReport] = dspy.InputField()
    tasks: list[Sentence] = dspy.OutputField(desc="one task per member, in member order", max_length=3)


class MemberReport(Signature):
    """You are the team member in `role`. Carry out your task on the question and report briefly."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    role: str = dspy.InputField()
    task: str = dspy.InputField()
    earlier_reports: list[TeamReport] = dspy.InputField()
    report: Reasoning = dspy.OutputField(desc="your findings, in sentences")


class LeadSummary(Signature):
    """You lead this team. Summarise your members' reports into the team's report."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    team: str = dspy.InputField()
    member_reports: list[TeamReport] = dspy.InputField()
    report: Reasoning = dspy.OutputField(desc="the team's findings, in sentences")


class FinalDecision(Signature):
    """You make the final decision. Read every team's report and choose the answer."""

    question: str = dspy.InputField()
    options: dict[str, str] = dspy.InputField(desc="option letter → text")
    team_reports: list[TeamReport] = dspy.InputField()
    reasoning: Reasoning = dspy.OutputField(desc="why, in sentences")
    answer: Letter = dspy.OutputField()
