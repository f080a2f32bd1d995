"""Prompt optimizers: thin wrappers over dspy's BootstrapFewShot, random search, MIPROv2 and GEPA.

Each is driven by the program's own per-example score (``ProgramInfo.score``), runs with
medprog's adapter (every call constrained), honours the compile budget, and writes an
artifact (see `medprog.optimizers.base.run_prompt_optimizer`). Knobs are the fields of each
strategy's config (`medprog.optimizers.prompt_config`), set with ``-o KEY=VALUE`` or the
``[options]`` table of the config file; the defaults keep small runs small.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy
from dspy.teleprompt import BootstrapFewShot

from medprog.optimizers.base import BudgetExhausted, CompileRequest, Session, run_prompt_optimizer
from medprog.optimizers.config import parse_options
from medprog.optimizers.prompt_config import BootstrapConfig, GEPAConfig, MIPROConfig, RandomSearchConfig


def _teacher_settings(s: Session) -> dict[str, Any]:
    return {"lm": s.teacher_lm} if s.teacher_lm is not None else {}


def _shuffled(examples: list[Any], seed: int) -> list[Any]:
    out = list(examples)
    random.Random(seed).shuffle(out)
    return out


class BudgetedBootstrap(BootstrapFewShot):
    """BootstrapFewShot that, when the budget runs out, stops bootstrapping and keeps the demos it has."""

    exhausted: str | None = None

    def _bootstrap_one_example(self, example: Any, round_idx: int = 0) -> bool:
        if self.exhausted is not None:
            return False
        try:
            return super()._bootstrap_one_example(example, round_idx)
        except BudgetExhausted as e:
            self.exhausted = str(e) or "budget spent"
            return False


def bootstrap(req: CompileRequest) -> Path:
    """Few-shot demos bootstrapped from the program's own successful traces (dspy BootstrapFewShot)."""
    o = parse_options(BootstrapConfig, req.options, optimizer="bootstrap")

    def optimize(student: Any, s: Session) -> Any:
        tp = BudgetedBootstrap(metric=s.metric, metric_threshold=o.metric_threshold,
                               teacher_settings=_teacher_settings(s),
                               max_bootstrapped_demos=o.max_bootstrapped_demos, max_labeled_demos=o.max_labeled_demos,
                               max_rounds=o.max_rounds, max_errors=o.max_errors)
        program = tp.compile(student, trainset=_shuffled(req.train, req.seed))
        if tp.exhausted:
            s.budget.reason = s.budget.reason or tp.exhausted
        return program

    return run_prompt_optimizer(req, "bootstrap", o, optimize)


def random_search(req: CompileRequest) -> Path:
    """Several bootstrapped demo sets scored on dev; the best wins (BootstrapFewShotWithRandomSearch)."""
    from dspy.teleprompt import BootstrapFewShotWithRandomSearch

    o = parse_options(RandomSearchConfig, req.options, optimizer="random-search")

    def optimize(student: Any, s: Session) -> Any:
        tp = BootstrapFewShotWithRandomSearch(
            metric=s.metric, metric_threshold=o.metric_threshold, teacher_settings=_teacher_settings(s),
            max_bootstrapped_demos=o.max_bootstrapped_demos, max_labeled_demos=o.max_labeled_demos,
            max_rounds=o.max_rounds, num_candidate_programs=o.num_candidates, num_threads=s.threads,
            max_errors=o.max_errors, stop_at_score=o.stop_at_score)
        return tp.compile(student, trainset=_shuffled(req.train, req.seed), valset=req.dev or None)

    return run_prompt_optimizer(req, "random-search", o, optimize)


@contextlib.contextmanager
def tolerant_proposals() -> Iterator[tuple[list[str], list[str]]]:
    """While MIPROv2 proposes instructions, a failed proposal (a weak prompt model that runs out of
    tokens, an engine error) keeps the predictor's current instruction instead of ending the compile.
    Yields (failures as error messages, the instructions proposed), so the report shows what the
    prompt model wrote (MIPROv2 then replaces each predictor's first proposal by its own instruction)."""
    from unittest import mock

    from dspy.propose.grounded_proposer import GroundedProposer

    failures: list[str] = []
    proposed: list[str] = []
    original = GroundedProposer.propose_instruction_for_predictor

    def propose(self: Any, program: Any, predictor: Any, *args: Any, **kwargs: Any) -> str:
        try:
            text = original(self, program, predictor, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - BudgetExhausted (a BaseException) still stops the compile
            failures.append(f"{type(e).__name__}: {str(e)[:200]}")
            return predictor.signature.instructions
        proposed.append(str(text))
        return text

    with mock.patch.object(GroundedProposer, "propose_instruction_for_predictor", propose):
        yield failures, proposed


def mipro(req: CompileRequest) -> Path:
    """Instructions proposed by a prompt model and demo sets, searched jointly (dspy MIPROv2).

    ``auto`` (light/medium/heavy, default light) sizes the search; or set both
    ``num_candidates`` and ``num_trials`` for an explicit, small search. The prompt model
    is ``--teacher`` when given, else the student's model.
    """
    o = parse_options(MIPROConfig, req.options, optimizer="mipro")

    def optimize(student: Any, s: Session) -> Any:
        from dspy.teleprompt import MIPROv2

        prompt_lm = s.reflection_lm(temperature=o.prompt_temperature, max_tokens=o.prompt_max_tokens)
        tp = MIPROv2(metric=s.metric, prompt_model=prompt_lm, task_model=s.lm, teacher_settings=_teacher_settings(s),
                     max_bootstrapped_demos=o.max_bootstrapped_demos, max_labeled_demos=o.max_labeled_demos,
                     auto=None if o.explicit else o.auto, num_candidates=o.num_candidates, num_threads=s.threads,
                     max_errors=o.max_errors, seed=req.seed, verbose=False, track_stats=False,
                     metric_threshold=o.metric_threshold)
        valset = req.dev or None
        n_val = len(valset) if valset else max(1, int(len(req.train) * 0.8))
        minibatch = o.minibatch if o.minibatch is not None else n_val > o.minibatch_size
        with tolerant_proposals() as (failures, proposed):
            program = tp.compile(
                student, trainset=req.train, valset=valset, num_trials=o.num_trials,
                minibatch=minibatch, minibatch_size=o.minibatch_size,
                program_aware_proposer=o.program_aware_proposer, data_aware_proposer=o.data_aware_proposer,
                tip_aware_proposer=o.tip_aware_proposer, fewshot_aware_proposer=o.fewshot_aware_proposer,
                view_data_batch_size=o.view_data_batch_size,
            )
        s.notes["failed_proposals"] = failures
        s.notes["proposed_instructions"] = proposed
        return program

    return run_prompt_optimizer(req, "mipro", o, optimize)


def _feedback_metric(s: Session):
    """GEPA's five-argument metric: the program's score, plus textual feedback per predictor."""
    info = s.req.program

    def metric(gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None):
        s.budget.check_refused()
        score = float(info.score(gold, pred))
        if pred_name is None:
            return score
        feedback = getattr(info, "feedback", None)
        if feedback is not None:
            return dspy.Prediction(score=score, feedback=str(feedback(gold, pred, pred_name)))
        outputs: dict[str, Any] = {}
        if pred_trace:
            _, _, out = pred_trace[0]
            outputs = dict(out.items()) if hasattr(out, "items") else {}
        expected = {k: gold.get(k) for k in outputs if gold.get(k) is not None} if hasattr(gold, "get") else {}
        lines = [f"Score {score:.3f} (1.0 is perfect)."]
        if expected:
            lines.append("Expected output: " + "; ".join(f"{k} = {str(v)[:1500]}" for k, v in expected.items()))
            lines.append("Produced output: " + "; ".join(f"{k} = {str(v)[:1500]}" for k, v in outputs.items()))
        return dspy.Prediction(score=score, feedback="\n".join(lines))

    return metric


def _widen_strings(schema: Any, max_chars: int) -> Any:
    """Raise the bound on free strings in a JSON schema (proposed instructions can be long)."""
    if isinstance(schema, dict):
        out = {k: _widen_strings(v, max_chars) for k, v in schema.items()}
        if out.get("type") == "string" and "maxLength" in out and not ({"enum", "const", "pattern"} & set(out)):
            out["maxLength"] = max_chars
        return out
    if isinstance(schema, list):
        return [_widen_strings(v, max_chars) for v in schema]
    return schema


def proposal_adapter(max_chars: int) -> dspy.Adapter:
    """medprog's adapter for an optimizer's own free-text proposals: constrained JSON, longer strings."""
    from medprog.engines.accounting import step
    from medprog.engines.constraints import JsonConstraint, constraint_for, to_response_format
    from medprog.signatures.adapter import MedprogAdapter

    class ProposalAdapter(MedprogAdapter):
        def __call__(self, lm, lm_kwargs, signature, demos, inputs):
            c = constraint_for(signature, inputs)
            if isinstance(c, JsonConstraint):
                c = JsonConstraint(json_schema=_widen_strings(c.json_schema, max_chars))
            lm_kwargs = {**lm_kwargs, "response_format": to_response_format(c)}
            with step("proposal"):
                return dspy.Adapter.__call__(self, lm, lm_kwargs, signature, demos, inputs)

    return ProposalAdapter()


class _GepaBudgetStop:
    """GEPA stop condition: stop between iterations once the budget is spent."""

    def __init__(self, s: Session) -> None:
        self.s = s

    def __call__(self, gepa_state: Any) -> bool:
        return self.s.budget.spent()


class _GepaTracker:
    """Feeds GEPA's full-valset evaluations to the candidate tracker (best program so far)."""

    def __init__(self, s: Session, student: Any) -> None:
        self.s, self.student = s, student

    def on_valset_evaluated(self, event: dict[str, Any]) -> None:
        from medprog.artifact import apply_state, module_state

        if self.s.budget.refused or event.get("num_examples_evaluated") != event.get("total_valset_size"):
            return
        program = self.student.deepcopy()
        names = dict(program.named_predictors())
        apply_state(program, {k: {"instructions": v} for k, v in event["candidate"].items() if k in names})
        self.s.tracker.offer(module_state(program), float(event["average_score"]),
                             int(event["num_examples_evaluated"]), source="gepa")


def gepa(req: CompileRequest) -> Path:
    """Instructions evolved by reflection on the program's traces and feedback (dspy GEPA).

    The reflection LM is ``--teacher`` when given, else the student's model (sampled at
    ``reflection_temperature``, default 1.0). Budget: ``max_metric_calls``, or ``auto``
    (default light); ``--budget-calls``/``--budget-tokens`` also stop it between iterations.
    """
    from dspy.teleprompt import GEPA
    from dspy.teleprompt.gepa.instruction_proposal import InstructionProposer

    o = parse_options(GEPAConfig, req.options, optimizer="gepa")

    def optimize(student: Any, s: Session) -> Any:
        reflection = s.reflection_lm(temperature=o.reflection_temperature, max_tokens=o.reflection_max_tokens)
        proposer = InstructionProposer(adapter=proposal_adapter(o.instruction_max_chars),
                                       max_chars=o.instruction_max_chars)
        tp = GEPA(metric=_feedback_metric(s), reflection_lm=reflection, instruction_proposer=proposer,
                  reflection_minibatch_size=o.reflection_minibatch_size,
                  candidate_selection_strategy=o.candidate_selection_strategy, use_merge=o.use_merge,
                  num_threads=s.threads, seed=req.seed, track_stats=False, failure_score=0.0,
                  perfect_score=o.perfect_score,
                  gepa_kwargs={"stop_callbacks": [_GepaBudgetStop(s)], "callbacks": [_GepaTracker(s, student)]},
                  **o.budget())
        return tp.compile(student, trainset=req.train, valset=req.dev or None)

    return run_prompt_optimizer(req, "gepa", o, optimize)
