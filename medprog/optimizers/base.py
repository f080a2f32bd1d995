"""What the prompt optimizers share: engines, the compile session, the dev evaluation, the artifact.

Every optimizer is ``fn(req: CompileRequest) -> Path`` (the artifact directory it wrote
with `medprog.artifact.save_artifact`). Prompt optimizers use `run_prompt_optimizer`,
which opens the engines, installs the budget (`medprog.optimizers.budget`), runs the dspy
optimizer with the program's own metric, keeps the best program so far if the budget runs
out, evaluates the result on the dev set and saves the artifact with its report. The dev
evaluation that writes ``report.json`` runs after the compile and is not counted.
Weight optimizers share `medprog.optimizers.weights` instead.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import dspy

from medprog.optimizers.budget import Budget, BudgetExhausted, CandidateTracker
from medprog.optimizers.request import CompileError, CompileRequest, RunSettings
from medprog.programs.registry import ProgramInfo

__all__ = ["Budget", "BudgetExhausted", "CandidateTracker", "CompileError", "CompileRequest", "RunSettings",
           "Session", "absolute_spec", "build_student", "evaluate_on", "make_metric", "open_engine", "open_session",
           "run_prompt_optimizer", "step_naming_adapter", "usage_of"]


# ---------------------------------------------------------------------------------------
# engines and the compile session


def open_engine(spec: str, run: RunSettings) -> Any:
    """An engine for ``spec`` with the run's cache and remote settings, checked to answer."""
    from medprog.engines.spec import make_engine, parse_lm_spec

    s = parse_lm_spec(spec)
    kwargs: dict[str, Any] = {}
    if s.kind == "openai":
        kwargs["allow_remote"] = run.allow_remote
    cache_dir: Path | None | Literal[False] = False if run.no_cache else run.cache_dir
    engine = make_engine(s, cache_dir=cache_dir, **kwargs)
    if hasattr(engine, "check"):
        engine.check()
    return engine


def absolute_spec(spec: str) -> str:
    """``local:``/``vllm:`` specs with an absolute path (artifacts are loaded from anywhere); an
    embedded model's name (``local:smollm2``) stays a name, resolved wherever the artifact is loaded."""
    from medprog.engines.embedded import REGISTRY

    kind, _, rest = spec.partition(":")
    if kind in ("local", "vllm") and rest and rest not in REGISTRY:
        return f"{kind}:{Path(rest).expanduser().resolve()}"
    return spec


@dataclass
class Session:
    """What an optimizer needs while it runs: engines as dspy LMs, the metric, the budget."""

    req: CompileRequest
    engine: Any
    teacher_engine: Any | None
    lm: Any
    teacher_lm: Any | None
    budget: Budget
    tracker: CandidateTracker
    metric: Callable[..., float]
    lm_kwargs: dict[str, Any]
    threads: int
    notes: dict[str, Any] = field(default_factory=dict)
    """Optimizer-specific facts for report.json (``compile.notes``)."""

    def reflection_lm(self, **kwargs: Any) -> Any:
        """The teacher LM if given, else the student's, with sampling kwargs for free-text proposals."""
        from medprog.engines.runtime import GuardedEngine

        eng = self.teacher_engine or self.engine
        return GuardedEngine(eng, before_call=self.budget.reserve_call).as_lm(**{**self.lm_kwargs, **kwargs})


def make_metric(info: ProgramInfo, budget: Budget) -> Callable[..., float]:
    """The program's per-example score as a dspy metric that stops when the budget is spent."""

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        budget.check_refused()
        return float(info.score(example, prediction))

    metric.__name__ = f"{info.name}_score"
    return metric


def step_naming_adapter(module: Any) -> Any:
    """medprog's adapter, counting calls under each step's original signature name even after an
    optimizer rewrote the signature (``with_instructions`` names every rewrite ``StringSignature``)."""
    from medprog.engines.accounting import current_step, step
    from medprog.signatures.adapter import MedprogAdapter

    names = {(tuple(p.signature.input_fields), tuple(p.signature.output_fields)): p.signature.__name__
             for _, p in module.named_predictors()}

    class StepNamingAdapter(MedprogAdapter):
        def __call__(self, lm, lm_kwargs, signature, demos, inputs):
            key = (tuple(signature.input_fields), tuple(signature.output_fields))
            if current_step() == "main" and key in names and signature.__name__ != names[key]:
                with step(names[key]):
                    return super().__call__(lm, lm_kwargs, signature, demos, inputs)
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)

    return StepNamingAdapter()


@contextlib.contextmanager
def open_session(req: CompileRequest, student: Any | None = None) -> Iterator[Session]:
    """Engines, LMs, budget and tracker, with medprog's adapter active for the whole compile."""
    from medprog.engines.runtime import GuardedEngine, engine_thread_safe
    from medprog.signatures.adapter import MedprogAdapter

    if not req.lm and req.engine is None:
        raise CompileError("--lm is required for a prompt optimizer")
    budget = Budget(req.budget_calls, req.budget_tokens)
    owned = []
    engine = req.engine
    if engine is None:
        engine = open_engine(str(req.lm), req.run)
        owned.append(engine)
    teacher_engine = req.teacher_engine
    if teacher_engine is None and req.teacher and req.teacher != req.lm:
        teacher_engine = open_engine(req.teacher, req.run)
        owned.append(teacher_engine)
    for e in (engine, teacher_engine):
        if e is not None:
            budget.attach(e)
    lm_kwargs = {"temperature": 0.0, "max_tokens": req.run.max_tokens}
    lm = GuardedEngine(engine, before_call=budget.reserve_call).as_lm(**lm_kwargs)
    teacher_lm = (GuardedEngine(teacher_engine, before_call=budget.reserve_call).as_lm(**lm_kwargs)
                  if teacher_engine is not None else None)
    threads = req.run.threads or (8 if engine_thread_safe(engine) else 1)
    tracker = CandidateTracker(budget)
    session = Session(req=req, engine=engine, teacher_engine=teacher_engine, lm=lm, teacher_lm=teacher_lm,
                      budget=budget, tracker=tracker, metric=make_metric(req.program, budget), lm_kwargs=lm_kwargs,
                      threads=threads)
    try:
        adapter = step_naming_adapter(student) if student is not None else MedprogAdapter()
        with dspy.context(lm=lm, adapter=adapter, callbacks=[tracker]):
            yield session
    finally:
        for e in owned:
            e.close()


def usage_of(*engines: Any) -> dict[str, Any]:
    """Per-step and total usage of the given engines' ledgers together."""
    from medprog.engines.accounting import Usage

    steps: dict[str, Usage] = {}
    for e in engines:
        if e is None:
            continue
        for name, u in e.ledger.snapshot()["steps"].items():
            steps.setdefault(name, Usage()).add(Usage(**u))
    total = Usage()
    for u in steps.values():
        total.add(u)
    return {"total": total.model_dump(), "steps": {k: v.model_dump() for k, v in steps.items()}}


def build_student(req: CompileRequest) -> tuple[Any, dict[str, Any]]:
    """A fresh program (with ``settings``), started from ``--base`` when that is an artifact."""
    from medprog.artifact import apply_state, is_artifact, verify_artifact

    settings = req.program_settings()
    student = req.program.build(**settings)
    if req.base and is_artifact(req.base):
        body = verify_artifact(req.base)
        apply_state(student, {k: {"instructions": v.get("instructions")} for k, v in body["steps"].items()},
                    where=str(req.base))
    return student, settings


def evaluate_on(req: CompileRequest, module: Any, examples: list[Any], session: Session) -> dict[str, Any]:
    """Dev metrics of ``module`` (in memory, not budgeted) with usage and wall time."""
    from medprog.evaluation import evaluate

    if not examples:
        return {}
    t0 = time.perf_counter()
    result = evaluate(req.program, module, examples, session.engine, None, concurrency=session.threads,
                      lm_kwargs=session.lm_kwargs, progress=req.run.progress)
    s = result.summary
    return {"metrics": result.metrics, "n": s["n"], "n_failed": s["n_failed"], "mean_score": s["mean_score"],
            "usage": s["usage"], "wall_s": round(time.perf_counter() - t0, 3)}


def run_prompt_optimizer(req: CompileRequest, method: str, config: Any,
                         optimize: Callable[[Any, Session], Any]) -> Path:
    """Run ``optimize(student, session) -> program`` under the budget; evaluate; save the artifact
    (``config``, the optimizer's parsed dataclass, is recorded in the report)."""
    from medprog.artifact import apply_state, restore_signature_names, save_artifact

    if not req.train:
        raise CompileError(f"the {method} optimizer needs training examples (--train)")
    student, settings = build_student(req)
    names = {n: p.signature.__name__ for n, p in student.named_predictors()}
    t0 = time.perf_counter()
    with open_session(req, student) as s:
        stopped = None
        try:
            program = optimize(student, s)
        except BudgetExhausted as e:
            stopped = str(e) or s.budget.reason
            best = s.tracker.best()
            program = student.deepcopy()
            if best is not None:
                apply_state(program, best["state"])
        compile_wall = time.perf_counter() - t0
        restore_signature_names(program, names)
        compile_usage = usage_of(s.engine, s.teacher_engine)
        budget = s.budget.summary()  # before the (unbudgeted) dev evaluation adds to the ledgers
        eval_set, eval_name = (req.dev, "dev") if req.dev else (req.train, "train")
        eval_set = req.run.dev_examples(eval_set)
        dev = evaluate_on(req, program, eval_set, s)
        report = {
            "optimizer": method,
            "program": {"name": req.program.name, "version": str(req.program.version)},
            "lm": req.lm, "teacher": req.teacher, "seed": req.seed,
            "n_train": len(req.train), "n_dev": len(req.dev),
            "eval_set": eval_name,
            "dev": dev,
            "compile": {"usage": compile_usage, "wall_s": round(compile_wall, 3), "budget": budget,
                        "stopped_early": stopped, "candidates": s.tracker.scores(), "notes": s.notes},
            "options": asdict(config),
        }
        out = save_artifact(req.out, req.program, program, settings=settings, report=report,
                            engine={"max_tokens": s.lm_kwargs["max_tokens"]},
                            default_lm=absolute_spec(req.lm) if req.lm else None,
                            extra={"optimizer": method})
    return out
