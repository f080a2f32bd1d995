"""report.html: it parses, its images are embedded PNGs, predictions are escaped."""

from __future__ import annotations

import base64
import html.parser
from pathlib import Path

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
