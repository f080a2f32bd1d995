"""report.html: it parses, its images are embedded PNGs, predictions are escaped."""

from __future__ import annotations

import base64
import html.parser
import re
from pathlib import Path

import pytest

from medprog.report import plots, render_report, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag in ("script", "link") or (tag == "img" and not a.get("src", "").startswith("data:")):
            self.external.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _summary() -> dict:
    return {
        "span_f1": 0.52, "token_f1": 0.67, "overall": 0.59,
        "per_category": {"drug_decision": {"p": 0.5, "r": 0.4, "f1": 0.44},
                         "defer_decision": {"p": 0.2, "r": 0.1, "f1": 0.13}},
        "groups": {"Female": {"base": 0.6}, "Male": {"base": 0.55}, "Non-English": {"base": 0.41}},
        "n": 3, "n_done": 3, "n_ok": 2, "n_failed": 1, "mean_score": 0.5, "wall_s": 1.5,
        "usage": {"total": {"calls": 5, "prompt_tokens": 900, "completion_tokens": 80, "cache_hits": 1,
                            "errors": 1, "wall_s": 1.2},
                  "steps": {"expert": {"calls": 3, "prompt_tokens": 600, "completion_tokens": 50, "cache_hits": 1,
                                       "errors": 0, "wall_s": 0.8},
                            "moderator": {"calls": 2, "prompt_tokens": 300, "completion_tokens": 30,
                                          "cache_hits": 0, "errors": 1, "wall_s": 0.4}}},
        "run": {"program": "tagger", "lm": "local:/models/x"},
    }


LINES = [
    {"id": "a", "record": {"tagged": "<drug_decision>start aspirin</drug_decision> & <script>alert(1)</script>"},
     "score": 1.0, "error": None},
    {"id": "b", "record": {"tagged": "no tags"}, "score": 0.0, "error": None},
    {"id": "c", "record": None, "score": 0.0, "error": "EngineError: server said <500>"},
]


def test_report_parses_and_images_are_embedded_pngs(tmp_path: Path) -> None:
    path = write_report(tmp_path / "report.html", summary=_summary(), lines=LINES, title="t")
    page = path.read_text()
    p = _Collector()
    p.feed(page)
    p.close()
    assert p.tags[0] == "html" and "table" in p.tags
    assert len(p.imgs) == 3  # per category, per subgroup, calls and tokens per step
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_MAGIC)
    assert p.external == []  # self-contained: no scripts, no linked files
    text = "".join(p.text)
    assert "span_f1" in text and "moderator" in text and "server said <500>" in text
    assert (path.stat().st_mode & 0o777) == 0o600


def test_predictions_are_html_escaped() -> None:
    page = render_report(summary=_summary(), lines=LINES)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;drug_decision&gt;" in page


def test_plots_found_generically() -> None:
    titles = [t for t, _ in plots(_summary())]
    assert titles == ["per category (f1)", "per subgroup (base)", "calls and tokens per step"]
    assert [t for t, _ in plots({"accuracy": 0.5, "per_option": {"A": 0.5, "B": 1.0}})] == ["per option"]
    assert plots({"accuracy": 1.0}) == []


# ---------------------------------------------------------------- subgroups and highlighted notes


def _nested_summary() -> dict:
    groups = {"sex": {"Female": {"n_notes": 30, "n_spans": 300, "span_f1": 0.5, "token_f1": 0.6, "base": 0.55},
                      "Male": {"n_notes": 28, "n_spans": 280, "span_f1": 0.45, "token_f1": 0.55, "base": 0.50}},
              "language": {"English": {"n_notes": 50, "n_spans": 500, "span_f1": 0.5, "token_f1": 0.6, "base": 0.55},
                           "Non-English": {"n_notes": 8, "n_spans": 70, "span_f1": 0.2, "token_f1": 0.3,
                                           "base": 0.25}}}
    return {"span_f1": 0.48, "token_f1": 0.58, "worst": 0.25, "worst_group": "language=Non-English",
            "groups": groups, "n": 58}


def test_subgroup_table_has_scores_and_sizes_and_names_the_worst_group() -> None:
    from medprog.report import subgroup_table

    page = render_report(summary=_nested_summary(), lines=[])
    table = subgroup_table(_nested_summary())
    assert table in page
    assert "Worst group: language=Non-English" in table and "over 8 notes" in table
    p = _Collector()
    p.feed(table)
    cells = [t.strip() for t in p.text if t.strip()]
    assert cells[cells.index("Non-English") + 1: cells.index("Non-English") + 6] == ["8", "70", "0.2000", "0.3000",
                                                                                    "0.2500"]
    assert table.count('class="worst"') == 1 and '<tr class="worst"><td>language</td><td>Non-English' in table
    assert [t for t, _ in plots(_nested_summary())] == ["per subgroup (base)"]  # dimension=group bars
    # without a named worst group, the lowest score is the worst
    unnamed = {k: v for k, v in _nested_summary().items() if k != "worst_group"}
    assert "Worst group: language=Non-English" in subgroup_table(unnamed)
    assert subgroup_table({"groups": {"Female": {"base": 0.6}}}) == ""  # flat groups: the generic table


def _view() -> dict:
    text = "Started <b>lasix</b> & held ASA. Return if fever."
    s1 = text.index("Started"), text.index("&") - 1
    s2 = text.index("held"), text.index(".")
    s3 = text.index("Return"), len(text) - 1
    return {"labels": ["Contact related", "Drug related", "Advice and precaution"], "notes": [{
        "id": "n1", "text": text, "groups": {"sex": "Female", "language": "Non-English"},
        "gold": [{"start": s1[0], "end": s1[1], "label": "Drug related", "status": "matched"},
                 {"start": s2[0], "end": s2[1], "label": "Drug related", "status": "missed"},
                 {"start": s3[0], "end": s3[1], "label": "Advice and precaution", "status": "matched"}],
        "predicted": [{"start": s1[0], "end": s1[1], "label": "Drug related", "status": "matched"},
                      {"start": s3[0], "end": s3[1], "label": "Advice and precaution", "status": "matched"},
                      {"start": s3[0], "end": s3[0] + 6, "label": "Contact related", "status": "spurious"}]}]}


def test_notes_show_gold_beside_predicted_with_missed_and_spurious_marked() -> None:
    lines = [{"id": "n1", "record": {}, "score": 0.625, "error": None}]
    page = render_report(summary=_nested_summary(), lines=lines, notes=_view())
    assert "<b>lasix</b>" not in page and "Started &lt;b&gt;lasix&lt;/b&gt;</span> &amp; " in page  # escaped
    assert "Gold: 3 spans, 1 missed" in page and "Predicted: 3 spans, 1 spurious" in page
    assert "score 0.625 · sex=Female · language=Non-English" in page
    legend = page[page.index('<div class="legend">'):]
    assert legend.index("1 Contact related") < legend.index("2 Drug related") < legend.index("3 Advice and precaution")
    gold_col, pred_col = page.split("<h4>Predicted")
    gold_col = gold_col[gold_col.index("<h4>Gold"):]
    assert re.search(r'class="hl missed"[^>]*title="Drug related \(missed\)"><sup>2</sup>held ASA</span>', gold_col)
    assert "spurious" not in gold_col.replace("spurious: predicted", "")
    assert re.search(r'class="hl spurious multi"[^>]*title="Advice and precaution \(matched\); '
                     r'Contact related \(spurious\)"><sup>3</sup><sup>1</sup>Return</span>', pred_col)
    assert "held ASA" in pred_col and "missed" not in pred_col  # not predicted: plain text there
    p = _Collector()
    p.feed(page)
    p.close()
    assert p.external == []


def test_notes_view_rejects_spans_outside_the_text() -> None:
    view = _view()
    view["notes"][0]["gold"][0]["end"] = 999
    with pytest.raises(ValueError, match="n1.*outside the text"):
        render_report(summary={}, lines=[], notes=view)


def test_tagger_report_notes_match_as_span_f1_does(tmp_path: Path) -> None:
    from medprog.data.synth_meddec_ood import synth_meddec_ood
    from medprog.metrics.meddec import refine_span
    from medprog.programs.tagger import load, report_notes

    synth_meddec_ood(tmp_path / "ood", n=2, seed=5)
    examples = load(tmp_path / "ood", "test")
    text = examples[0].note

    def key(s: int, e: int, c: int) -> tuple[int, str]:  # span F1's identity: category, refined text
        a, b = refine_span(text, s, e)
        return c, text[a:b].lower()

    gold = [[d["start"], d["end"], d["category"]] for d in examples[0].meddec["decisions"]]
    kept = [g for g in gold if key(*g) != key(*gold[0])]  # every copy of one decision: missed
    spurious = [0, 5, 1]  # "Admis" of the header line: no gold decision there
    k = next(i for i, g in enumerate(kept) if text[g[1] - 2:g[1]].isalpha())
    cut = [*kept[:k], [kept[k][0], kept[k][1] - 1, kept[k][2]], *kept[k + 1:]]  # ends inside a word: still a match
    view = report_notes(examples, [{"id": examples[0].id, "predictions": cut + [spurious]}])
    first, second = view["notes"]
    status = {(g["start"], g["end"]): g["status"] for g in first["gold"]}
    assert [status[(g[0], g[1])] for g in gold] == ["matched" if g in kept else "missed" for g in gold]
    assert "missed" in status.values()
    assert [s["status"] for s in first["predicted"]] == ["matched"] * len(kept) + ["spurious"]
    assert all(s["status"] == "missed" for s in second["gold"]) and second["predicted"] == []  # no record
    assert set(first["groups"]) <= {"sex", "race", "language"}
    assert view["labels"][4] == "Drug related"
    page = render_report(summary={}, lines=[], notes=view)
    assert f"<h3>{examples[1].id}</h3>" in page


def test_evaluate_passes_the_programs_notes_to_the_report(tmp_path: Path) -> None:
    import dataclasses

    from medprog.evaluation import evaluate
    from test_artifact import TOY, FakeEngine, write_toy_data

    def notes(examples, records):
        return {"labels": ["urgent"], "notes": [{"id": str(e.id), "text": f"note <{e.id}>", "gold": [
            {"start": 0, "end": 4, "label": "urgent", "status": "missed"}]} for e in examples]}

    info = dataclasses.replace(TOY, report_notes=notes)
    examples = TOY.load(write_toy_data(tmp_path / "d.jsonl", 3), None)
    evaluate(info, info.build(), examples, FakeEngine(), tmp_path / "run", progress=False)
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Notes: gold beside predicted (3 of 3)" in page and f"note &lt;{examples[0].id}&gt;" in page
