"""``report.html``: one self-contained page per evaluation (no external files, no scripts).

It shows the metrics, plots embedded as base64 PNGs (per category or option, per
subgroup, calls and tokens per step), the cost table, and a sample of predictions
(HTML-escaped). Plots are found generically in the program's metrics: any ``per_*``
mapping is a per-category/option chart, ``groups``/``subgroups`` a per-subgroup chart.
Subgroups given per dimension (``{"sex": {"Female": {...}}}``) also get a table of score and
size per group with the worst group named. A span-tagging program may pass its notes
(:class:`medprog.report_spans.NotesView`): they are shown highlighted, gold beside predicted.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

from medprog.report_spans import STYLE as SPANS_STYLE
from medprog.report_spans import NotesView, render_notes

RESERVED = {"usage", "run", "n", "n_done", "n_ok", "n_failed", "mean_score", "wall_s"}
GROUP_KEYS = ("groups", "subgroups", "per_group", "per_subgroup")
PREFERRED = ("f1", "span_f1", "base", "accuracy", "acc", "score", "mean")
GROUP_PREFERRED = ("base", "score", *PREFERRED)
"""A subgroup's score: MedDec's per-group base (its worst group is the lowest base) first."""


def _number(value: Any, prefer: tuple[str, ...] = PREFERRED) -> float | None:
    """A number to plot for a metric value: itself, or a preferred numeric field of a dict."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        for k in prefer:
            if isinstance(value.get(k), (int, float)) and not isinstance(value.get(k), bool):
                return float(value[k])
        for v in value.values():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
    return None


def _series(mapping: dict[str, Any], prefer: tuple[str, ...] = PREFERRED) -> tuple[list[str], list[float], str]:
    labels, values, field = [], [], ""
    for k, v in mapping.items():
        n = _number(v, prefer)
        if n is not None:
            labels.append(str(k))
            values.append(n)
            if isinstance(v, dict) and not field:
                field = next((f for f in prefer if isinstance(v.get(f), (int, float))), "")
    return labels, values, field


def png_data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _bar(title: str, labels: list[str], values: list[float], ylabel: str) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(labels) + 2), 3.2))
    ax.bar(range(len(labels)), values, color="#4c72b0")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=35 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    for i, v in enumerate(values):
        ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=8)
    uri = png_data_uri(fig)
    plt.close(fig)
    return uri


def _usage_plot(steps: dict[str, dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(steps)
    x = range(len(names))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(6.0, 1.1 * len(names) + 4), 3.2))
    a1.bar(x, [steps[n].get("calls", 0) for n in names], color="#55a868", label="calls")
    a1.bar(x, [steps[n].get("cache_hits", 0) for n in names], color="#8172b2", label="of which cached")
    a1.set_title("calls per step")
    a1.legend(fontsize=8)
    prompt = [steps[n].get("prompt_tokens", 0) for n in names]
    completion = [steps[n].get("completion_tokens", 0) for n in names]
    a2.bar(x, prompt, color="#4c72b0", label="prompt")
    a2.bar(x, completion, bottom=prompt, color="#dd8452", label="completion")
    a2.set_title("tokens per step")
    a2.legend(fontsize=8)
    for ax in (a1, a2):
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=30 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
    uri = png_data_uri(fig)
    plt.close(fig)
    return uri


def nested_groups(value: Any) -> bool:
    """Whether subgroups are given per dimension: ``{dim: {group: {metric: number}}}``."""
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(g, dict) and g and all(isinstance(m, dict) for m in g.values())
                    for g in value.values()))


def flat_groups(value: dict[str, Any]) -> dict[str, Any]:
    """``{dim: {group: stats}}`` → ``{"dim=group": stats}`` (flat mappings pass through)."""
    if not nested_groups(value):
        return value
    return {f"{dim}={grp}": stats for dim, groups in value.items() for grp, stats in groups.items()}


def plots(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, data URI) for every chart the summary supports."""
    out = []
    for key, value in summary.items():
        if key in RESERVED or not isinstance(value, dict) or not value:
            continue
        if key in GROUP_KEYS:
            value = flat_groups(value)
        if key.startswith("per_") or key in GROUP_KEYS:
            labels, values, field = _series(value, GROUP_PREFERRED if key in GROUP_KEYS else PREFERRED)
            if labels:
                kind = "per subgroup" if key in GROUP_KEYS else key.replace("_", " ")
                title = f"{kind}" + (f" ({field})" if field else "")
                out.append((title, _bar(title, labels, values, field or key)))
    steps = (summary.get("usage") or {}).get("steps") or {}
    if steps:
        out.append(("calls and tokens per step", _usage_plot(steps)))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)[:300]
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metric_tables(summary: dict[str, Any]) -> str:
    scalars = [[k, v] for k, v in summary.items()
               if k not in ("usage", "run") and not isinstance(v, (dict, list))]
    parts = ["<h2>Metrics</h2>", _table(["metric", "value"], scalars)]
    for key, value in summary.items():
        if key in RESERVED or not isinstance(value, dict) or not value or (key in GROUP_KEYS and nested_groups(value)):
            continue
        cols: list[str] = []
        for v in value.values():
            if isinstance(v, dict):
                cols += [c for c in v if c not in cols and not isinstance(v[c], (dict, list))]
        rows = [[k] + ([v.get(c, "") for c in cols] if isinstance(v, dict) else [v]) for k, v in value.items()]
        parts.append(f"<h3>{html.escape(key)}</h3>" + _table([key] + (cols or ["value"]), rows))
    return "\n".join(parts)


def _group_score(stats: dict[str, Any]) -> float | None:
    return _number(stats, GROUP_PREFERRED)


def subgroup_table(summary: dict[str, Any]) -> str:
    """Score and size per subgroup (groups given per dimension), the worst row marked and named."""
    key = next((k for k in GROUP_KEYS if nested_groups(summary.get(k))), None)
    if key is None:
        return ""
    rows = [(dim, grp, stats) for dim, groups in summary[key].items() for grp, stats in groups.items()]
    cols: list[str] = []
    for _, _, stats in rows:
        cols += [c for c, v in stats.items() if c not in cols and isinstance(v, (int, float))]
    named = summary.get("worst_group")
    scored = [(_group_score(st), f"{d}={g}") for d, g, st in rows if _group_score(st) is not None]
    worst = named if any(name == named for _, name in scored) else min(scored)[1] if scored else None
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["dimension", "group", *cols])
    body = ""
    for d, g, st in rows:
        cells = "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in [d, g, *(st.get(c, "") for c in cols)])
        body += ('<tr class="worst">' if f"{d}={g}" == worst else "<tr>") + cells + "</tr>"
    line = ""
    if worst is not None:
        d, g = worst.split("=", 1)
        st = summary[key].get(d, {}).get(g, {})
        size = f" over {st['n_notes']} notes" if isinstance(st.get("n_notes"), int) else ""
        field = next((f for f in GROUP_PREFERRED if isinstance(st.get(f), (int, float))), "score")
        line = f"<p><b>Worst group: {html.escape(worst)}</b> ({field} {_group_score(st):.4f}{size}).</p>"
    return f"<h2>Subgroups</h2>{line}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _usage_table(usage: dict[str, Any]) -> str:
    cols = ["calls", "cache_hits", "prompt_tokens", "completion_tokens", "errors", "wall_s"]
    rows = [[name] + [u.get(c, 0) for c in cols] for name, u in (usage.get("steps") or {}).items()]
    if usage.get("total"):
        rows.append(["total"] + [usage["total"].get(c, 0) for c in cols])
    return "<h2>Cost</h2>" + _table(["step"] + cols, rows)


def _sample(lines: list[dict[str, Any]], k: int) -> str:
    failed = [r for r in lines if r.get("error")]
    chosen = lines[:k] + [r for r in failed if r not in lines[:k]][:k]
    rows = []
    for r in chosen:
        rec = json.dumps(r.get("record"), ensure_ascii=False, default=str)
        rec = rec if len(rec) <= 1500 else rec[:1500] + " …"
        rows.append([r.get("id"), r.get("score"), r.get("error") or "", rec])
    return (f"<h2>Sample of predictions ({len(chosen)} of {len(lines)})</h2>"
            + _table(["id", "score", "error", "record"], rows))


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top;text-align:left}
td{max-width:700px;overflow-wrap:anywhere;white-space:pre-wrap}
th{background:#f3f3f3} img{max-width:100%;margin:.5em 0 1em;display:block}
"""


def render_report(*, summary: dict[str, Any], lines: list[dict[str, Any]], title: str = "medprog report",
                  sample: int = 20, notes: NotesView | dict[str, Any] | None = None, notes_shown: int = 10) -> str:
    """The report page as a string; ``notes`` (a span-tagging program's) adds the highlighted notes."""
    view = NotesView.model_validate(notes) if isinstance(notes, dict) else notes
    scores = {str(r.get("id")): float(r["score"]) for r in lines if isinstance(r.get("score"), (int, float))}
    run = summary.get("run") or {}
    figs = "".join(f"<figure><figcaption>{html.escape(t)}</figcaption><img alt=\"{html.escape(t)}\" src=\"{uri}\">"
                   f"</figure>" for t, uri in plots(summary))
    parts = [
        "<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(title)}</title><style>{STYLE}{SPANS_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _table(["run", "value"], [[k, v] for k, v in run.items()]) if run else "",
        _metric_tables(summary),
        subgroup_table(summary),
        "<h2>Plots</h2>" + figs if figs else "",
        _usage_table(summary.get("usage") or {}),
        render_notes(view, scores, notes_shown) if view is not None else "",
        _sample(lines, sample),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_report(path: str | Path, *, summary: dict[str, Any], lines: list[dict[str, Any]],
                 title: str = "medprog report", sample: int = 20,
                 notes: NotesView | dict[str, Any] | None = None) -> Path:
    """Write ``report.html`` (owner-only) and return its path."""
    path = Path(path)
    page = render_report(summary=summary, lines=lines, title=title, sample=sample, notes=notes)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path
