"""What every compile strategy shares: the request, budgets, engines, best-so-far, the artifact.

Every optimizer is ``fn(req: CompileRequest) -> Path`` (the artifact directory it wrote
with `medprog.artifact.save_artifact`). Prompt optimizers use `run_prompt_optimizer`,
which opens the engines, installs the budget, runs the dspy optimizer with the program's
own metric, keeps the best program so far if the budget runs out, evaluates the result
on the dev set and saves the artifact with its report.

Budgets (``--budget-calls``, ``--budget-tokens``) count every model call the compile makes
(student and teacher engines, cache hits included, so a warm cache does not change which
program comes out). When a budget is spent, the next call raises `BudgetExhausted`; the
wrapper catches it and keeps the best program evaluated so far. The dev evaluation that
writes ``report.json`` runs after the compile and is not counted.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

from medprog.programs.registry import ProgramInfo


@dataclass
class CompileRequest:
    """One ``medprog compile`` invocation.

    ``options`` carries optimizer knobs (e.g. ``num_candidates``, ``max_bootstrapped_demos``,
    ``auto``) and run settings: ``settings`` (program build kwargs, default
    ``program.defaults``), ``base`` and ``members`` (for weight and ensemble optimizers),
    ``allow_remote``, ``no_cache``, ``cache_dir``, ``max_tokens``, ``threads``, ``progress``,
    ``dev_limit`` (score only the first N dev examples for the report);
    from Python, ``engine`` / ``teacher_engine`` may hold already-open engines to use instead of
    opening ``lm`` / ``teacher``.
    """

    program: ProgramInfo
    train: list[dspy.Example]
    dev: list[dspy.Example]
    lm: str | None
    teacher: str | None
    out: Path
    budget_calls: int | None = None
    budget_tokens: int | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


class CompileError(ValueError):
    """A compile that cannot run as asked (missing data, missing --lm, bad option)."""


class BudgetExhausted(BaseException):
    """The compile's call or token budget is spent.

    A `BaseException` on purpose: dspy's optimizers catch ``Exception`` per example and
    carry on, which would turn a spent budget into a stream of failed examples. This one
    passes through them to the optimizer wrapper, which keeps the best program so far.
    """


class Budget:
    """Counts calls (reserved before each call) and tokens (from the engines' ledgers)."""

    def __init__(self, calls: int | None = None, tokens: int | None = None) -> None:
        if calls is not None and calls < 1:
            raise CompileError(f"--budget-calls must be at least 1, got {calls}")
        if tokens is not None and tokens < 1:
            raise CompileError(f"--budget-tokens must be at least 1, got {tokens}")
        self.calls, self.tokens = calls, tokens
        self.calls_used = 0
        self._ledgers: list[tuple[Any, int]] = []
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.refused = False

    def attach(self, engine: Any) -> None:
        t = engine.ledger.total
        self._ledgers.append((engine.ledger, t.prompt_tokens + t.completion_tokens))

    @property
    def tokens_used(self) -> int:
        out = 0
        for ledger, start in self._ledgers:
            t = ledger.total
            out += t.prompt_tokens + t.completion_tokens - start
        return out

    @property
    def exhausted(self) -> bool:
        return self.reason is not None

    def spent(self) -> bool:
        """True once a limit is reached (never raises)."""
        if self.reason is None:
            if self.calls is not None and self.calls_used >= self.calls:
                self.reason = f"call budget of {self.calls} spent"
            elif self.tokens is not None and self.tokens_used >= self.tokens:
                self.reason = f"token budget of {self.tokens} spent ({self.tokens_used} used)"
        return self.reason is not None

    def check(self) -> None:
        """Raise `BudgetExhausted` if a limit is reached."""
        if self.spent():
            raise BudgetExhausted(self.reason)

    def check_refused(self) -> None:
        """Raise `BudgetExhausted` once a call has been refused (scoring the last allowed call is fine)."""
        if self.refused:
            raise BudgetExhausted(self.reason)

    def reserve_call(self) -> None:
        """Before each model call: raise (and remember the refusal) if spent, else count the call."""
        with self._lock:
            if self.spent():
                self.refused = True
                raise BudgetExhausted(self.reason)
            self.calls_used += 1

    def summary(self) -> dict[str, Any]:
        return {"calls": self.calls, "tokens": self.tokens, "calls_used": self.calls_used,
                "tokens_used": self.tokens_used, "exhausted": self.exhausted, "reason": self.reason}


# ---------------------------------------------------------------------------------------
# best program so far


class CandidateTracker(BaseCallback):
    """Remembers every fully evaluated candidate program, to keep the best if a compile stops early.

    Registered as a dspy callback, it sees each ``dspy.Evaluate`` call (random search and
    MIPROv2 score candidates that way); GEPA reports its candidates through `offer`.
    Only evaluations on the largest set seen are compared, and none made after the budget
    ran out (their failures would be the budget's, not the program's).
    """

    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget
        self.records: list[dict[str, Any]] = []
        self._open: dict[str, tuple[dict[str, Any], int]] = {}
        self._lock = threading.Lock()

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        from medprog.artifact import module_state

        program = inputs.get("program")
        devset = inputs.get("devset") or getattr(instance, "devset", None) or []
        if program is not None and hasattr(program, "named_predictors"):
            with self._lock:
                self._open[call_id] = (module_state(program), len(devset))

    def on_evaluate_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        with self._lock:
            opened = self._open.pop(call_id, None)
        if opened is None or exception is not None or outputs is None:
            return
        if self.budget is not None and self.budget.refused:
            return
        score = getattr(outputs, "score", None)
        if isinstance(score, (int, float)):  # dspy.Evaluate reports a percentage
            self.offer(opened[0], float(score) / 100.0, opened[1], source="evaluate")

    def offer(self, state: dict[str, Any], score: float, n: int, *, source: str) -> None:
        with self._lock:
            self.records.append({"state": state, "score": score, "n": n, "source": source})

    def best(self) -> dict[str, Any] | None:
        """The best record on the largest evaluation set (earliest on ties), or None."""
        if not self.records:
            return None
        n = max(r["n"] for r in self.records)
        pool = [r for r in self.records if r["n"] == n]
        return max(pool, key=lambda r: r["score"])  # max keeps the first of equals

    def scores(self) -> list[dict[str, Any]]:
        return [{"score": r["score"], "n": r["n"], "source": r["source"]} for r in self.records]


# ---------------------------------------------------------------------------------------
# engines and the compile session


def open_engine(spec: str, options: dict[str, Any]) -> Any:
    """An engine for ``spec`` with the request's cache and remote settings, checked to answer."""
    from medprog.engines.spec import make_engine, parse_lm_spec

    s = parse_lm_spec(spec)
    kwargs: dict[str, Any] = {}
    if s.kind == "openai":
        kwargs["allow_remote"] = bool(options.get("allow_remote", False))
    cache_dir = False if options.get("no_cache") else options.get("cache_dir")
    engine = make_engine(s, cache_dir=cache_dir, **kwargs)
    if hasattr(engine, "check"):
        engine.check()
    return engine


def absolute_spec(spec: str) -> str:
    """``local:``/``vllm:`` specs with an absolute path (artifacts are loaded from anywhere)."""
    kind, _, rest = spec.partition(":")
    if kind in ("local", "vllm") and rest:
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

    @property
    def options(self) -> dict[str, Any]:
        return self.req.options

    def reflection_lm(self, **kwargs: Any) -> Any:
        """The teacher LM if given, else the student's, with sampling kwargs for free-text proposals."""
        from medprog.evaluation import GuardedEngine

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
    from medprog.evaluation import GuardedEngine, engine_thread_safe, install_usage_tee
    from medprog.signatures.adapter import MedprogAdapter

    if not req.lm and req.options.get("engine") is None:
        raise CompileError(f"--lm is required for the {req.options.get('optimizer', 'prompt')} optimizer")
    budget = Budget(req.budget_calls, req.budget_tokens)
    owned = []
    engine = req.options.get("engine")
    if engine is None:
        engine = open_engine(req.lm, req.options)
        owned.append(engine)
    teacher_engine = req.options.get("teacher_engine")
    if teacher_engine is None and req.teacher and req.teacher != req.lm:
        teacher_engine = open_engine(req.teacher, req.options)
        owned.append(teacher_engine)
    for e in (engine, teacher_engine):
        if e is not None:
            install_usage_tee(e)
            budget.attach(e)
    lm_kwargs = {"temperature": 0.0, "max_tokens": int(req.options.get("max_tokens", 1024))}
    lm = GuardedEngine(engine, before_call=budget.reserve_call).as_lm(**lm_kwargs)
    teacher_lm = (GuardedEngine(teacher_engine, before_call=budget.reserve_call).as_lm(**lm_kwargs)
                  if teacher_engine is not None else None)
    threads = int(req.options.get("threads") or (8 if engine_thread_safe(engine) else 1))
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

    info = req.program
    settings = {**info.defaults, **(req.options.get("settings") or {})}
    student = info.build(**settings)
    base = req.options.get("base")
    if base and is_artifact(base):
        body = verify_artifact(base)
        apply_state(student, {k: {"instructions": v.get("instructions")} for k, v in body["steps"].items()},
                    where=str(base))
    return student, settings


def evaluate_on(req: CompileRequest, module: Any, examples: list[Any], session: Session) -> dict[str, Any]:
    """Dev metrics of ``module`` (in memory, not budgeted) with usage and wall time."""
    from medprog.evaluation import evaluate

    if not examples:
        return {}
    t0 = time.perf_counter()
    result = evaluate(req.program, module, examples, session.engine, None, concurrency=session.threads,
                      lm_kwargs=session.lm_kwargs, progress=bool(req.options.get("progress", False)))
    s = result.summary
    return {"metrics": result.metrics, "n": s["n"], "n_failed": s["n_failed"], "mean_score": s["mean_score"],
            "usage": s["usage"], "wall_s": round(time.perf_counter() - t0, 3)}


def run_prompt_optimizer(req: CompileRequest, method: str,
                         optimize: Callable[[Any, Session], Any]) -> Path:
    """Run ``optimize(student, session) -> program`` under the budget; evaluate; save the artifact."""
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
        if req.options.get("dev_limit") is not None:
            eval_set = eval_set[: int(req.options["dev_limit"])]
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
            "options": {k: v for k, v in req.options.items() if isinstance(v, (str, int, float, bool, type(None)))},
        }
        out = save_artifact(req.out, req.program, program, settings=settings, report=report,
                            engine={"max_tokens": s.lm_kwargs["max_tokens"]},
                            default_lm=absolute_spec(req.lm) if req.lm else None,
                            extra={"optimizer": method})
    return out
