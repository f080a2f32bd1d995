"""`mdagents`: adaptive multi-agent medical QA (MDAgents, NeurIPS 2024).

A complexity assessment routes each question (or a fixed ``mode`` does):

- basic: recruited experts answer independently (in parallel), an arbitrator decides;
- intermediate: recruited experts answer, then discuss for up to ``rounds`` × ``turns``: each
  turn every expert decides whether to speak and to whom; the discussion stops as soon as a
  turn passes in silence. Experts give final answers and a moderator decides;
- advanced: an initial-assessment team, specialist teams and a final review & decision team
  run in that order; in each, the lead assigns tasks, members report (in parallel), the lead
  summarises; every team sees the earlier teams' reports, and the final decision sees all.

Only the question and the options reach a prompt. Every answer is a `Literal` over the
question's own option letters, so there is no answer parsing and no parse-error bucket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import dspy

from medprog.data.medqa import load_medqa
from medprog.engines.accounting import step
from medprog.metrics.mcq import mcq_metrics
from medprog.programs.multiagent import narrowed_call, pmap, tracked
from medprog.programs.registry import Record, declare
from medprog.signatures.mcq import (
    Arbitrate,
    AssessComplexity,
    AssignTasks,
    DecideToSpeak,
    Expert,
    ExpertAnswer,
    FinalDecision,
    LeadSummary,
    MemberReport,
    Moderate,
    Opinion,
    PlanTeams,
    RecruitExperts,
    Team,
    TeamMember,
    TeamReport,
)

Mode = Literal["adaptive", "basic", "intermediate", "advanced"]
FALLBACK_ROLES = ["Internist", "Emergency physician", "Family physician", "Clinical pharmacologist",
                  "Pathologist", "Radiologist", "Surgeon", "Pediatrician"]


class MDAgents(dspy.Module):
    """Route a question by complexity and answer it with a panel or teams of LLM agents."""

    def __init__(self, mode: Mode = "adaptive", n_experts: int = 3, rounds: int = 2, turns: int = 2,
                 n_specialist_teams: int = 1, team_size: int = 2, max_workers: int = 8) -> None:
        super().__init__()
        if mode not in ("adaptive", "basic", "intermediate", "advanced"):
            raise ValueError(f"mdagents: unknown mode {mode!r}; expected adaptive, basic, intermediate or advanced")
        if not (1 <= team_size <= 3 and 0 <= n_specialist_teams <= 4):
            raise ValueError("mdagents: team_size must be 1-3 and n_specialist_teams 0-4 (the team plan's bounds)")
        self.mode, self.n_experts, self.rounds, self.turns = mode, max(1, n_experts), rounds, turns
        self.n_specialist_teams, self.team_size, self.max_workers = n_specialist_teams, team_size, max_workers
        self.assess = dspy.Predict(AssessComplexity)
        self.recruit = dspy.Predict(RecruitExperts)
        self.expert = dspy.Predict(ExpertAnswer)
        self.arbitrate = dspy.Predict(Arbitrate)
        self.speak = dspy.Predict(DecideToSpeak)
        self.moderate = dspy.Predict(Moderate)
        self.plan = dspy.Predict(PlanTeams)
        self.assign = dspy.Predict(AssignTasks)
        self.member = dspy.Predict(MemberReport)
        self.summarise = dspy.Predict(LeadSummary)
        self.decide = dspy.Predict(FinalDecision)

    # helpers ------------------------------------------------------------------------------
    def _answer(self, predictor: dspy.Predict, letters: list[str], **inputs: Any) -> dspy.Prediction:
        """Call a predictor whose ``answer`` is narrowed to this question's letters."""
        return narrowed_call(predictor, "answer", letters, **inputs)

    def _pmap(self, fn, items):
        return pmap(fn, items, self.max_workers)

    def _recruit(self, q: dict[str, Any]) -> list[Expert]:
        with step("recruit"):
            experts = list(self.recruit(**q, n_experts=self.n_experts).experts)[: self.n_experts]
        taken = {e.role for e in experts}
        spare = [r for r in FALLBACK_ROLES if r not in taken]
        while len(experts) < self.n_experts:  # a short list is topped up, never an error
            experts.append(Expert(role=spare.pop(0), description="general medical expertise", hierarchy="independent"))
        return experts

    # modes ------------------------------------------------------------------------------
    def basic(self, q: dict[str, Any], letters: list[str]) -> dict[str, Any]:
        experts = self._recruit(q)
        with step("expert"):
            answers = self._pmap(lambda e: self._answer(self.expert, letters, **q, role=e.role, discussion=""), experts)
        opinions = [Opinion(expert=e.role, reasoning=a.reasoning, answer=a.answer) for e, a in zip(experts, answers)]
        with step("arbitrator"):
            final = self._answer(self.arbitrate, letters, **q, opinions=opinions)
        return {"answer": final.answer, "reasoning": final.reasoning,
                "trace": {"experts": [e.model_dump() for e in experts], "opinions": [o.model_dump() for o in opinions]}}

    def intermediate(self, q: dict[str, Any], letters: list[str]) -> dict[str, Any]:
        experts = self._recruit(q)
        names = [f"{i + 1}. {e.role}" for i, e in enumerate(experts)]
        with step("expert"):
            first = self._pmap(lambda e: self._answer(self.expert, letters, **q, role=e.role, discussion=""), experts)
        opinions = [Opinion(expert=n, reasoning=a.reasoning, answer=a.answer) for n, a in zip(names, first)]
        messages: list[dict[str, Any]] = []
        turns_run = 0

        def inbox(i: int) -> str:
            return "\n".join(f"{names[m['from']]} → you: {m['text']}" for m in messages if i in m["to"])

        def decide(i: int) -> dspy.Prediction:
            others = [j + 1 for j in range(len(experts)) if j != i]
            colleagues = "\n".join(f"{names[j - 1]} answered {opinions[j - 1].answer}: {opinions[j - 1].reasoning}"
                                   for j in others)
            return narrowed_call(self.speak, "to", others, as_list=True, **q, me=names[i], colleagues=colleagues,
                                 inbox=inbox(i))

        if len(experts) > 1:
            silent = False
            for r in range(self.rounds):
                for t in range(self.turns):
                    with step("debate"):
                        decisions = self._pmap(decide, range(len(experts)))
                    turns_run += 1
                    said = [{"round": r + 1, "turn": t + 1, "from": i,
                             "to": sorted({j - 1 for j in d.to}) or [j for j in range(len(experts)) if j != i],
                             "text": d.message}
                            for i, d in enumerate(decisions) if d.speak]
                    if not said:  # nobody speaks: the discussion is over
                        silent = True
                        break
                    messages.extend(said)
                if silent:
                    break

        def final_answer(i: int) -> dspy.Prediction:
            mine = "\n".join(f"{names[m['from']]} → {', '.join(names[j] for j in m['to'])}: {m['text']}"
                             for m in messages if i in m["to"] or m["from"] == i)
            own = f"Your first answer was {opinions[i].answer}: {opinions[i].reasoning}"
            return self._answer(self.expert, letters, **q, role=experts[i].role, discussion=f"{own}\n{mine}".strip())

        with step("expert_final"):
            finals = self._pmap(final_answer, range(len(experts)))
        final_opinions = [Opinion(expert=n, reasoning=a.reasoning, answer=a.answer) for n, a in zip(names, finals)]
        with step("moderator"):
            final = self._answer(self.moderate, letters, **q, opinions=final_opinions)
        return {"answer": final.answer, "reasoning": final.reasoning,
                "trace": {"experts": [e.model_dump() for e in experts], "initial": [o.model_dump() for o in opinions],
                          "messages": messages, "turns": turns_run,
                          "final": [o.model_dump() for o in final_opinions]}}

    def _teams(self, q: dict[str, Any]) -> list[Team]:
        with step("plan_teams"):
            plan = self.plan(**q, n_specialist_teams=self.n_specialist_teams, team_size=self.team_size).plan
        teams = [plan.initial_assessment, *list(plan.specialist_teams)[: self.n_specialist_teams], plan.final_review]
        out = []
        for i, t in enumerate(teams):
            members = list(t.members)[: self.team_size] or [TeamMember(role=FALLBACK_ROLES[i % 8], expertise="general")]
            out.append(Team(name=t.name or f"Team {i + 1}", lead=t.lead, members=members))
        return out

    def advanced(self, q: dict[str, Any], letters: list[str]) -> dict[str, Any]:
        teams = self._teams(q)
        reports: list[TeamReport] = []
        for team in teams:  # in order: each team sees the reports of the teams before it
            earlier = list(reports)
            with step("team_lead"):
                tasks = list(self.assign(**q, team=team, earlier_reports=earlier).tasks)
            tasks += [f"Assess the question from the perspective of a {m.role}." for m in team.members[len(tasks):]]
            with step("team_member"):
                member_reports = self._pmap(
                    lambda mt: self.member(**q, role=mt[0].role, task=mt[1], earlier_reports=earlier).report,
                    list(zip(team.members, tasks)))
            with step("team_lead"):
                summary = self.summarise(**q, team=team.name, member_reports=[
                    TeamReport(team=m.role, report=r) for m, r in zip(team.members, member_reports)]).report
            reports.append(TeamReport(team=team.name, report=summary))
        with step("final_decision"):
            final = self._answer(self.decide, letters, **q, team_reports=reports)
        return {"answer": final.answer, "reasoning": final.reasoning,
                "trace": {"teams": [t.model_dump() for t in teams], "reports": [r.model_dump() for r in reports]}}

    def forward(self, question: str, options: dict[str, str]) -> dspy.Prediction:
        letters = list(options)
        q = {"question": question, "options": dict(options)}
        with tracked() as usage:
            complexity = None
            mode = self.mode
            if mode == "adaptive":
                with step("complexity"):
                    complexity = self.assess(**q).complexity
                mode = complexity
            result = getattr(self, mode)(q, letters)
        return dspy.Prediction(**result, mode=mode, complexity=complexity, usage=usage)


# ------------------------------------------------------------------------- registry glue

def load(path: str | Path, split: str | None = None) -> list[dspy.Example]:
    """MedQA-style jsonl: inputs ``question`` and ``options``; gold ``answer`` (a letter)."""
    return [dspy.Example(id=i.id, question=i.question, options=i.options, answer=i.answer)
            .with_inputs("question", "options") for i in load_medqa(path, split)]


def to_record(example: dspy.Example, prediction: Any) -> Record:
    return {"id": example.id, "answer": prediction.answer, "gold": example.get("answer"),
            "correct": prediction.answer == example.get("answer"), "mode": prediction.get("mode"),
            "complexity": prediction.get("complexity"), "usage": prediction.get("usage") or {},
            "reasoning": prediction.get("reasoning"), "trace": prediction.get("trace")}


def metrics(examples: list[dspy.Example], records: list[Record]) -> dict[str, Any]:
    return mcq_metrics({str(e.id): e.get("answer") for e in examples}, records)


def score(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    return float(prediction.answer == example.get("answer"))


PROGRAM = declare(
    __name__,
    name="mdagents",
    task="medical multiple-choice QA (MedQA-style)",
    metric="accuracy; calls and tokens per question and per mode",
    build=MDAgents,
    defaults={"mode": "adaptive", "n_experts": 3, "rounds": 2, "turns": 2, "n_specialist_teams": 1,
              "team_size": 2},
)
