"""The tagger's files: an official MedDec submission scored against a MedDec folder, and the
per-category chart written beside an evaluation.

They live here, not in `medprog.metrics.meddec`, so that the metrics stay pure functions over
gold and predicted structures; this module does the reading and drawing around them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medprog.data.meddec import CATEGORY_TAGS, MedDecFormatError, load_meddec, read_submission
from medprog.metrics.meddec import score


def score_submission(gold_dir: str | Path, pred_file: str | Path, split: str | None = None) -> dict:
    """Score an official submission file against a MedDec folder, like the official evaluator.

    With ``split``, gold notes and predictions are restricted to ``splits/<split>.txt``.
    A prediction for a note without gold annotations is an error naming the notes.
    """
    notes = load_meddec(gold_dir, split)
    preds = read_submission(pred_file)
    ids = {n.id for n in notes}
    if split is not None:
        preds = {k: v for k, v in preds.items() if k in ids}
    unknown = sorted(set(preds) - ids)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        raise MedDecFormatError(
            f"{pred_file}: predictions for {len(unknown)} note(s) with no gold annotation in {gold_dir}: {shown}"
        )
    return score(notes, preds)


def plot_per_category(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Write a bar chart (PNG) of span P/R/F1 per category from ``metrics['per_category']``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per = metrics["per_category"]
    tags = [t for t in CATEGORY_TAGS if t in per]
    fig = Figure(figsize=(10, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.27
    xs = range(len(tags))
    for k, (key, colour) in enumerate((("precision", "#9ecae1"), ("recall", "#fdae6b"), ("f1", "#31a354"))):
        vals = [per[t][key] for t in tags]
        bars = ax.bar([x + (k - 1) * width for x in xs], vals, width, label=key, color=colour)
        if key == "f1":
            for b, v in zip(bars, vals):
                ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(tags, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("span score")
    title = "MedDec span scores per category"
    if "overall" in metrics:
        title += (
            f"  (span F1 {metrics.get('span_f1', 0):.3f}, token F1 {metrics.get('token_f1', 0):.3f},"
            f" overall {metrics['overall']:.3f})"
        )
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
