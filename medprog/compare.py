"""Compare two evaluation runs: metric differences, with a paired bootstrap CI on per-example scores.

Aggregate metrics (from each ``metrics.json``) are shown side by side; the confidence
interval is for the difference in mean per-example score (``score`` in
``predictions.jsonl``) over the example ids both runs finished, resampling ids with
replacement and keeping the pairs together.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medprog.evaluation import METRICS, PREDICTIONS, EvalRunError, latest_by_id, read_predictions


@dataclass
class Comparison:
    a: str
    b: str
    n_shared: int
    only_a: int
    only_b: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_b_not_better: float | None
    """Bootstrap share of resamples where B's mean is not above A's (a one-sided p-value)."""
    confidence: float
    n_boot: int
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(a: list[float], b: list[float], *, n_boot: int = 10000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float, float]:
    """(mean difference b − a, CI low, CI high, share of resamples with b − a ≤ 0)."""
    import numpy as np

    if len(a) != len(b) or not a:
        raise ValueError("paired bootstrap needs two equally long, non-empty score lists")
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // len(d))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        idx = rng.integers(0, len(d), size=(k, len(d)))
        means[start:start + k] = d[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(d.mean()), float(low), float(high), float((means <= 0).mean())


def _load_run(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    if not (path / PREDICTIONS).is_file():
        raise EvalRunError(f"{path}: no {PREDICTIONS}; expected an `medprog eval` output directory")
    rows = latest_by_id(read_predictions(path / PREDICTIONS))
    metrics: dict[str, Any] = {}
    mpath = path / METRICS
    if mpath.is_file():
        try:
            metrics = json.loads(mpath.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise EvalRunError(f"{mpath}: not valid JSON ({e.msg})") from None
    return rows, metrics


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    skip = {"n", "n_done", "n_ok", "n_failed", "wall_s"}
    return {k: float(v) for k, v in metrics.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}


def compare_runs(run_a: str | Path, run_b: str | Path, *, n_boot: int = 10000, confidence: float = 0.95,
                 seed: int = 0) -> Comparison:
    """Compare run B against run A (positive differences: B is higher)."""
    a_rows, a_metrics = _load_run(Path(run_a))
    b_rows, b_metrics = _load_run(Path(run_b))
    shared = [i for i in a_rows if i in b_rows
              and a_rows[i].get("score") is not None and b_rows[i].get("score") is not None]
    sa = [float(a_rows[i]["score"]) for i in shared]
    sb = [float(b_rows[i]["score"]) for i in shared]
    if shared:
        diff, low, high, p = paired_bootstrap(sa, sb, n_boot=n_boot, confidence=confidence, seed=seed)
        mean_a, mean_b = sum(sa) / len(sa), sum(sb) / len(sb)
    else:
        diff = low = high = p = mean_a = mean_b = None  # type: ignore[assignment]
    ma, mb = _scalars(a_metrics), _scalars(b_metrics)
    table = {k: {"a": ma.get(k), "b": mb.get(k),
                 "diff": (mb[k] - ma[k]) if k in ma and k in mb else None}
             for k in list(ma) + [k for k in mb if k not in ma]}
    return Comparison(a=str(run_a), b=str(run_b), n_shared=len(shared), only_a=len(set(a_rows) - set(b_rows)),
                      only_b=len(set(b_rows) - set(a_rows)), mean_a=mean_a, mean_b=mean_b, diff=diff,
                      ci_low=low, ci_high=high, p_b_not_better=p, confidence=confidence, n_boot=n_boot,
                      metrics=table)
