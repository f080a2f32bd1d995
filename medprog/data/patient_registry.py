"""Patient registries (CSV) and the C-Reason task builder (the seeded synthetic registry is `synth_registry`).

(Not to be confused with `medprog.programs.registry`, the registry of programs.)

A registry is a CSV with one patient per row. An optional sidecar ``<name>.schema.json``
describes it: ``{"id": column, "outcome": column, "outcome_question": text, "variables": {column: {"label", "section",
"type": "numeric"|"categorical", "unit"}}}``; without one, types are inferred (numeric when
every value parses as a number and there are more than 5 distinct values), every column is
in one "Record" section, and an ``id``-like first column is the id.

`build_tasks` turns rows into multiple-choice reasoning tasks:

- masked variable: one variable is hidden and asked for; context variables whose normalised
  mutual information with it exceeds ``mi_threshold`` are dropped too (so the answer cannot
  be read off a near-copy, e.g. creatinine from eGFR);
- 5 options: numeric distractors spread around the true value by the standard deviation of
  the Gaussian-mixture component the value belongs to; categorical distractors are the most
  frequent other categories;
- outcome question (e.g. in-hospital death, yes/no) for a share of the rows;
- the record is serialised in sections; the outcome is never part of the record;
- a task with fewer than two options, or whose record, question and options repeat an earlier
  task's, is skipped (a question must have a choice and one gold answer per prompt).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import string
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from medprog.data.rows import is_saved_dataset, read_rows


class RegistryFormatError(ValueError):
    """A registry CSV or schema that cannot be used; the message names the file."""


class Variable(BaseModel):
    name: str
    label: str = ""
    section: str = "Record"
    type: Literal["numeric", "categorical"] = "categorical"
    unit: str = ""
    decimals: int = 0


class Registry(BaseModel):
    """Rows keyed by column name; numeric values are floats, missing values None."""

    variables: list[Variable]
    rows: list[dict[str, float | str | None]]
    id_column: str | None = None
    outcome: str | None = None
    outcome_question: str | None = None

    def var(self, name: str) -> Variable:
        return next(v for v in self.variables if v.name == name)

    def column(self, name: str) -> list[float | str | None]:
        return [r.get(name) for r in self.rows]


class ReasoningTask(BaseModel):
    id: str
    record: str
    question: str
    options: dict[str, str]
    answer: str
    variable: str
    kind: Literal["masked", "outcome"]
    dropped: list[str] = []
    """Context variables left out because they nearly determine the masked one."""


# ----------------------------------------------------------------------- loading

def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _decimals(values: list[str]) -> int:
    return min(2, max((len(v.split(".", 1)[1]) if "." in v else 0) for v in values)) if values else 0


REGISTRY_FILE = "registry.csv"


def registry_path(path: str | Path) -> Path:
    """``path`` itself (a file or a ``save_to_disk`` directory of tasks), or ``path/registry.csv``
    for another directory."""
    path = Path(path)
    return path / REGISTRY_FILE if path.is_dir() and not is_saved_dataset(path) else path


def load_registry(path: str | Path) -> Registry:
    """A registry CSV (or a directory holding ``registry.csv``) with its optional ``<name>.schema.json``."""
    path = registry_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such registry CSV (create one with `medprog data synth registry`)")
    with path.open(newline="", encoding="utf-8") as f:
        raw = list(csv.DictReader(f))
    if not raw:
        raise RegistryFormatError(f"{path}: no rows")
    columns = list(raw[0])
    schema_path = path.with_suffix(".schema.json")
    schema = json.loads(schema_path.read_text()) if schema_path.is_file() else {}
    declared = schema.get("variables", {})
    id_col = schema.get("id") or next((c for c in columns[:1] if "id" in c.lower()), None)
    outcome = schema.get("outcome")
    for name in [id_col, outcome, *declared]:
        if name and name not in columns:
            raise RegistryFormatError(f"{schema_path}: column {name!r} is not in {path}")
    variables = []
    for c in columns:
        if c == id_col:
            continue
        present = [r[c].strip() for r in raw if r[c] is not None and r[c].strip() != ""]
        numeric = all(_number(v) is not None for v in present) and len(set(present)) > 5
        spec = {"label": c.replace("_", " "), "type": "numeric" if numeric else "categorical", **declared.get(c, {})}
        variables.append(Variable(name=c, decimals=_decimals(present) if spec["type"] == "numeric" else 0, **spec))
    rows = []
    for i, r in enumerate(raw):
        row: dict[str, float | str | None] = {"_id": r[id_col] if id_col else str(i)}
        for v in variables:
            text = (r.get(v.name) or "").strip()
            if not text:
                row[v.name] = None
            elif v.type == "numeric":
                value = _number(text)
                if value is None:
                    raise RegistryFormatError(f"{path}: row {i + 2}, column {v.name!r}: {text!r} is not a number")
                row[v.name] = value
            else:
                row[v.name] = text
        rows.append(row)
    return Registry(variables=variables, rows=rows, id_column=id_col, outcome=outcome,
                    outcome_question=schema.get("outcome_question"))


# ----------------------------------------------------------------------- statistics

def _codes(values: list, numeric: bool, bins: int = 5) -> list[int | None]:
    """Discrete codes for MI: quantile bins for numbers, category indices otherwise."""
    if numeric:
        present = np.array([v for v in values if v is not None], dtype=float)
        if present.size == 0:
            return [None] * len(values)
        edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
        return [None if v is None else int(np.searchsorted(edges, v, side="right")) for v in values]
    cats = {c: i for i, c in enumerate(sorted({v for v in values if v is not None}))}
    return [None if v is None else cats[v] for v in values]


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mi(x: list[int | None], y: list[int | None]) -> float:
    """Mutual information of two discrete variables over rows where both are present, divided by
    the geometric mean of their entropies (0: independent, 1: each determines the other)."""
    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
    if len(pairs) < 2:
        return 0.0
    a, b = np.array(pairs).T
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    hx, hy, hxy = _entropy(joint.sum(1)), _entropy(joint.sum(0)), _entropy(joint.ravel())
    denom = math.sqrt(hx * hy)
    return (hx + hy - hxy) / denom if denom > 0 else 0.0


class Gaussian1D(BaseModel):
    weights: list[float]
    means: list[float]
    stds: list[float]

    def component(self, x: float) -> int:
        w, m, s = map(np.asarray, (self.weights, self.means, self.stds))
        logp = np.log(w) - np.log(s) - 0.5 * ((x - m) / s) ** 2
        return int(np.argmax(logp))


def fit_gmm(values: list[float], k: int = 3, iters: int = 60) -> Gaussian1D:
    """A 1-D Gaussian mixture by EM (quantile initialisation; deterministic)."""
    x = np.asarray(values, dtype=float)
    k = max(1, min(k, len(np.unique(x))))
    floor = max(float(x.std()) * 1e-3, 1e-6)
    means = np.quantile(x, (np.arange(k) + 0.5) / k)
    stds = np.full(k, max(float(x.std()) / k, floor))
    weights = np.full(k, 1.0 / k)
    for _ in range(iters):
        logp = np.log(weights) - np.log(stds) - 0.5 * ((x[:, None] - means) / stds) ** 2
        logp -= logp.max(1, keepdims=True)
        resp = np.exp(logp)
        resp /= resp.sum(1, keepdims=True)
        nk = resp.sum(0) + 1e-12
        weights = nk / nk.sum()
        means = (resp * x[:, None]).sum(0) / nk
        stds = np.maximum(np.sqrt((resp * (x[:, None] - means) ** 2).sum(0) / nk), floor)
    return Gaussian1D(weights=weights.tolist(), means=means.tolist(), stds=stds.tolist())


# ----------------------------------------------------------------------- task builder

def _fmt(value: float | str, var: Variable) -> str:
    if isinstance(value, str):
        return value
    text = f"{value:.{var.decimals}f}"
    return f"{text} {var.unit}".strip()


def serialize_record(registry: Registry, row: dict, hide: set[str]) -> str:
    """The row as sections of ``- label: value`` lines, without the ``hide`` variables."""
    sections: dict[str, list[str]] = {}
    for v in registry.variables:
        value = row.get(v.name)
        if v.name in hide or value is None:
            continue
        sections.setdefault(v.section, []).append(f"- {v.label}: {_fmt(value, v)}")
    return "\n".join(f"## {name}\n" + "\n".join(lines) for name, lines in sections.items())


def numeric_options(value: float, var: Variable, gmm: Gaussian1D, lo: float, hi: float, n: int = 5) -> list[str]:
    """The true value and ``n - 1`` distractors at ±1σ, ±2σ, … of its mixture component."""
    step = 10.0 ** -var.decimals
    sigma = max(gmm.stds[gmm.component(value)], step)
    truth = _fmt(round(value, var.decimals), var)
    out = [truth]
    for mult in (1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6):
        cand = round(value + mult * sigma, var.decimals)
        text = _fmt(cand, var)
        if lo - sigma <= cand <= hi + sigma and text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out


def categorical_options(column: list[float | str | None], value: float | str) -> list[str]:
    """The true value and up to four others, the most frequent in ``column`` first."""
    counts: dict[str, int] = {}
    for x in column:
        if x is not None:
            counts[str(x)] = counts.get(str(x), 0) + 1
    others = sorted((c for c in counts if c != value), key=lambda c: (-counts[c], c))
    return [str(value), *others[:4]]


def build_tasks(registry: Registry, *, n: int | None = None, seed: int = 0, mi_threshold: float = 0.3,
                outcome_share: float = 0.25, outcome_question: str | None = None,
                rows: list[int] | None = None) -> list[ReasoningTask]:
    """One task per row (of ``rows``, default all; at most ``n``), seeded."""
    rng = random.Random(seed)
    maskable = [v for v in registry.variables if v.name != registry.outcome]
    codes = {v.name: _codes(registry.column(v.name), v.type == "numeric") for v in registry.variables}
    mi_cache: dict[tuple[str, str], float] = {}
    gmms: dict[str, Gaussian1D] = {}
    ranges: dict[str, tuple[float, float]] = {}

    def dropped_for(name: str) -> list[str]:
        out = []
        for v in maskable:
            if v.name != name:
                key = (name, v.name)
                if key not in mi_cache:
                    mi_cache[key] = normalized_mi(codes[name], codes[v.name])
                if mi_cache[key] > mi_threshold:
                    out.append(v.name)
        return out

    def options_for(var: Variable, value: float | str) -> list[str]:
        if var.type == "numeric":
            if var.name not in gmms:
                col = [float(x) for x in registry.column(var.name) if x is not None]
                gmms[var.name], ranges[var.name] = fit_gmm(col), (min(col), max(col))
            return numeric_options(float(value), var, gmms[var.name], *ranges[var.name])
        return categorical_options(registry.column(var.name), value)

    tasks: list[ReasoningTask] = []
    seen: set[tuple[str, str, frozenset[str]]] = set()
    hidden_always = {registry.outcome} if registry.outcome else set()
    for i in (rows if rows is not None else range(len(registry.rows))):
        if n is not None and len(tasks) >= n:
            break
        row = registry.rows[i]
        use_outcome = registry.outcome and row.get(registry.outcome) is not None and rng.random() < outcome_share
        if use_outcome:
            var, kind, drop = registry.var(str(registry.outcome)), "outcome", []
            question = outcome_question or registry.outcome_question or f"What was the patient's {var.label}?"
        else:
            present = [v for v in maskable if row.get(v.name) is not None]
            if not present:
                continue
            var, kind = rng.choice(present), "masked"
            drop = dropped_for(var.name)
            question = f"The patient's {var.label} is missing from the record. What is its most likely value?"
        value = row[var.name]
        if value is None:  # never: rows without this value were skipped above
            continue
        opts = options_for(var, value)
        record = serialize_record(registry, row, {var.name, *drop, *hidden_always})
        if _answerable(opts, record, question, seen):
            tasks.append(_lettered(rng, ReasoningTask(id=f"{row['_id']}:{var.name}", record=record, question=question,
                                                      options={}, answer="", variable=var.name, kind=kind,
                                                      dropped=drop), opts))
    return tasks


def _lettered(rng: random.Random, task: ReasoningTask, options: list[str]) -> ReasoningTask:
    """``task`` with ``options`` (the true value first) shuffled under letters A, B, ... and its gold letter."""
    truth = options[0]
    rng.shuffle(options)
    letters = dict(zip(string.ascii_uppercase, options))
    return task.model_copy(update={"options": letters, "answer": next(k for k, t in letters.items() if t == truth)})


def _answerable(options: list[str], record: str, question: str, seen: set[tuple[str, str, frozenset[str]]]) -> bool:
    """False for a task with fewer than two options (nothing to choose), or one whose record,
    question and option set repeat an earlier task's (two patients whose visible data coincide,
    e.g. in a tiny registry where the MI filter hides most variables: identical prompts, possibly
    different gold letters); ``seen`` collects the tasks kept."""
    key = (record, question, frozenset(options))
    if len(set(options)) < 2 or key in seen:
        return False
    seen.add(key)
    return True


SPLIT_BUCKETS: dict[str, range] = {"train": range(0, 7), "dev": range(7, 8), "val": range(7, 8), "test": range(8, 10)}
"""Which of ten patient buckets (a hash of the patient id) each split holds: train 70%, dev (alias val)
10%, test 20% — disjoint, so tuning on dev never sees a test patient."""


def split_rows(registry: Registry, split: str | None) -> list[int]:
    """Row indices of a split (see `SPLIT_BUCKETS`), or all rows for None."""
    if split is None:
        return list(range(len(registry.rows)))
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"unknown split {split!r}; expected train, test, dev or val")
    buckets = SPLIT_BUCKETS[split]
    return [i for i, r in enumerate(registry.rows)
            if int(hashlib.sha1(str(r["_id"]).encode()).hexdigest(), 16) % 10 in buckets]


def write_tasks(tasks: list[ReasoningTask], path: str | Path) -> Path:
    """Tasks as jsonl (build them once with custom settings, then evaluate the file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(t.model_dump_json() + "\n" for t in tasks), encoding="utf-8")
    return path


def load_tasks(path: str | Path) -> list[ReasoningTask]:
    """Tasks from a jsonl (`write_tasks`), parquet or CSV file, or a ``save_to_disk`` directory."""
    out = []
    for row in read_rows(path, error=RegistryFormatError):
        try:
            out.append(ReasoningTask.model_validate(row.value))
        except ValueError as e:
            raise RegistryFormatError(f"{row.where}: not a reasoning task ({' '.join(str(e).split())})") from None
    return out
