"""Hand-computed checks of every MedDec scoring rule (span F1, token F1, subgroups, overall)."""

from __future__ import annotations

import random
import re

import pytest

from medprog.data.meddec import Decision, MedDecNote, gold_predictions, write_submission
from medprog.metrics import meddec as M
from medprog.metrics.meddec import (
    MedDecScorer,
    language_group,
    note_token_f1,
    race_group,
    refine_span,
    score,
    sex_group,
    token_labels,
    token_offsets,
)
from medprog.programs.tagger_outputs import plot_per_category, score_submission


def note(nid: str, text: str, spans=(), gender="F", ethnicity="W", language="ENGL") -> MedDecNote:
    return MedDecNote(
        id=nid,
        text=text,
        decisions=[Decision(start=s, end=e, category=c, text=text[s:e]) for s, e, c in spans],
        gender=gender,
        ethnicity=ethnicity,
        language=language,
    )


def at(text: str, phrase: str, nth: int = 0) -> tuple[int, int]:
    i = -1
    for _ in range(nth + 1):
        i = text.index(phrase, i + 1)
    return i, i + len(phrase)


def refined(text: str, start: int, end: int) -> str | None:
    r = refine_span(text, start, end)
    return None if r is None else text[r[0]:r[1]]


# ---------------------------------------------------------------- refinement


def test_refine_widens_cut_words():
    text = "The patient was started on lasix today."
    s = text.index("atient")
    e = text.index("started") + len("star")
    assert refined(text, s, e) == "patient was started"
    # span at the very start / end of the text cannot widen past it
    assert refined(text, 1, 3) == "The"
    assert refined(text, len(text) - 4, len(text)) == "today"


def test_refine_trims_punctuation():
    text = "Plan: (started lasix). Done"
    s, e = at(text, "(started lasix).")
    assert refined(text, s, e) == "started lasix"
    s, e = at(text, ": (started")
    assert refined(text, s, e) == "started"
    assert refined(text, *at(text, ". ")) is None  # nothing but punctuation
    assert refined("a   b", 1, 4) is None  # only whitespace
    assert refine_span("", 0, 3) is None


def test_refine_keeps_deid_brackets():
    text = "Seen at ([**Hospital1 18**]). Then [lasix] given."
    s, e = at(text, "([**Hospital1 18**]).")
    # '(' and ')' and '.' go, '[' before a '**' token and ']' after one stay
    assert refined(text, s, e) == "[**Hospital1 18**]"
    s, e = at(text, "at ([**Hospital1 18**]).")
    assert refined(text, s, e) == "at ([**Hospital1 18**]"
    # a bracket not next to a ** token is ordinary punctuation
    assert refined(text, *at(text, "[lasix]")) == "lasix"


def _official_refine(text, start, end):
    """The official evaluate.py refine_span, without medprog's fast path."""
    from nltk.tokenize import TreebankWordTokenizer

    if not text:
        return None, None
    while start > 0 and start < len(text) and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while end > 0 and end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    span_text = text[start:end]
    if not span_text.strip():
        return None, None
    spans = list(TreebankWordTokenizer().span_tokenize(span_text))
    words = [span_text[s:e] for s, e in spans]

    def is_content(w):
        return any(c.isalnum() for c in w) or "**" in w

    i = 0
    while i < len(words):
        if is_content(words[i]) or (words[i] == "[" and i + 1 < len(words) and "**" in words[i + 1]):
            break
        i += 1
    j = len(words)
    while j > i:
        if is_content(words[j - 1]) or (words[j - 1] == "]" and j - 2 >= 0 and "**" in words[j - 2]):
            break
        j -= 1
    if i >= j:
        return None, None
    return start + spans[i][0], start + spans[j - 1][1]


def test_refine_matches_official_algorithm_on_random_spans(tmp_path):
    from medprog.data.meddec import load_meddec
    from medprog.data.synth_meddec import synth_meddec

    synth_meddec(tmp_path, n=20, seed=3)
    rng = random.Random(0)
    for n in load_meddec(tmp_path):
        for _ in range(60):
            s = rng.randrange(len(n.text))
            e = min(len(n.text) + 3, s + rng.randint(1, 60))
            got = refine_span(n.text, s, e)
            want = _official_refine(n.text, s, e)
            assert (got or (None, None)) == want, (n.text[s:e], got, want)


# ---------------------------------------------------------------- tokens


def test_word_tokenize_is_nltks(tmp_path, monkeypatch):
    """Same tokens as nltk.word_tokenize reading a punkt_tab folder rendered from the package."""
    import nltk
    import punkt
    from nltk.tokenize import _get_punkt_tokenizer

    model = punkt.load_model("english")
    lang = tmp_path / "tokenizers" / "punkt_tab" / "english"
    lang.mkdir(parents=True)
    (lang / "abbrev_types.txt").write_text("\n".join(sorted(model.abbrev_types)))
    (lang / "sent_starters.txt").write_text("\n".join(sorted(model.sent_starters)))
    (lang / "collocations.tab").write_text("\n".join("\t".join(c) for c in sorted(model.collocations)))
    (lang / "ortho_context.tab").write_text("\n".join(f"{k}\t{int(v)}" for k, v in sorted(model.ortho_context.items())))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    _get_punkt_tokenizer.cache_clear()
    try:
        text = (
            'Dr. Smith saw the pt. on [**2118-6-2**] at [**Hospital1 18**]. He said "no". '
            "BP 120/80, HR 70s. Started lasix 40 mg IV b.i.d. Return if fever > 101.5F.\n\n"
            "Followup: Dr. [**Last Name (STitle) 123**] in 2 wks. She can't go; it's 5 p.m. now..."
        )
        assert M.word_tokenize(text) == nltk.word_tokenize(text)
    finally:
        _get_punkt_tokenizer.cache_clear()


def test_fast_word_tokenizer_matches_nltk_on_corpus(tmp_path):
    from nltk.tokenize.destructive import NLTKWordTokenizer

    from medprog.data.meddec import load_meddec
    from medprog.data.synth_meddec import synth_meddec

    synth_meddec(tmp_path, n=40, seed=9)
    reference = NLTKWordTokenizer()
    fast = M._word_tokenizer()
    assert isinstance(fast.PUNCTUATION[0][0], re.Pattern)  # the fast path is on
    sentences = {s for n in load_meddec(tmp_path) for s in M.sentence_tokenizer().tokenize(n.text)}
    sentences |= set(M._PROBES)
    for sent in sorted(sentences):
        assert fast.tokenize(sent) == reference.tokenize(sent), sent


def test_token_offsets_skip_converted_quotes():
    text = 'He said "no".'
    offs = token_offsets(text)
    assert [text[s:e] for s, e in offs] == ["He", "said", "no", "."]


def test_token_labels_ambiguity():
    text = "Start lasix for CHF now."
    toks = token_offsets(text)
    assert [text[s:e] for s, e in toks] == ["Start", "lasix", "for", "CHF", "now", "."]
    spans = [(*at(text, "Start lasix for CHF"), 5), (*at(text, "CHF"), 3)]
    assert token_labels(toks, spans) == [5, 5, 5, -1, 0, 0]
    # two spans of the same category make a token ambiguous too; categories 10/11 never count
    assert token_labels(toks, [(0, 5, 5), (0, 11, 5), (12, 19, 10)]) == [-1, 5, 0, 0, 0, 0]
    # partial overlap of a token counts as overlap
    assert token_labels(toks, [(2, 7, 1)]) == [1, 1, 0, 0, 0, 0]


def test_note_token_f1_rules():
    # gold-ambiguous positions are excluded: gold [5,5,5,-1,0,0], pred [5,5,0,0,0,0]
    # -> gold [5,5,5,0,0] vs pred [5,5,0,0,0]: P=1, R=2/3, F1=0.8
    assert note_token_f1([5, 5, 5, -1, 0, 0], [5, 5, 0, 0, 0, 0]) == pytest.approx(0.8)
    # a prediction-ambiguous position is just "not category 5": same 0.8
    assert note_token_f1([5, 5, 5, -1, 0, 0], [5, 5, -1, 3, 0, 0]) == pytest.approx(0.8)
    # macro over categories in gold or prediction: cat 5 F1 0, cat 3 F1 0
    assert note_token_f1([5, 5, 5, -1, 0, 0], [0, 0, 0, 0, 3, 0]) == 0.0
    # macro: cat 5 F1 1.0, cat 3 (only predicted) 0.0 -> 0.5
    assert note_token_f1([5, 5, 0, 0], [5, 5, 3, 0]) == pytest.approx(0.5)
    # no category left: 1 if identical, else 0 (a predicted -1 is a disagreement)
    assert note_token_f1([0, 0, 0], [0, 0, 0]) == 1.0
    assert note_token_f1([0, 0, 0], [0, -1, 0]) == 0.0
    # no positions left
    assert note_token_f1([], []) == 1.0
    assert note_token_f1([-1, -1], [5, 0]) == 1.0


# ---------------------------------------------------------------- span F1


def test_identical_spans_count_once_and_match_by_text():
    text = "Gave lasix. Later gave lasix again."
    first, second = at(text, "lasix"), at(text, "lasix", 1)
    n = note("1_1_1", text, [(*first, 5)])
    # duplicated prediction, and the other occurrence of the same text: one set element
    m = score([n], {"1_1_1": [(*second, 5), (*second, 5), (first[0], first[1] + 1, 5)]})
    assert (m["span_tp"], m["span_fp"], m["span_fn"]) == (1, 0, 0)
    assert m["span_f1"] == 1.0
    # gold listing the same span twice is one gold element as well
    n2 = note("1_1_1", text, [(*first, 5), (*second, 5)])
    assert score([n2], {"1_1_1": []})["span_fn"] == 1
    # case is ignored
    text3 = "Lasix given. lasix held."
    n3 = note("2_2_2", text3, [(*at(text3, "Lasix"), 5)])
    assert score([n3], {"2_2_2": [(*at(text3, "lasix"), 5)]})["span_f1"] == 1.0


def test_span_f1_micro_and_per_category():
    text = "Started lasix for CHF. Goal INR 2-3. Avoid salt."
    gold = [(*at(text, "Started lasix for CHF"), 5), (*at(text, "CHF"), 3), (*at(text, "Goal INR 2-3"), 4)]
    n = note("1_2_3", text, gold)
    preds = [
        (*at(text, "Started lasix for CHF."), 5),  # trailing '.' trimmed: match
        (*at(text, "Goal INR"), 4),  # different text: fp, and gold INR span is fn
        (*at(text, "Avoid salt"), 9),  # fp
    ]
    m = score([n], {"1_2_3": preds})
    assert (m["span_tp"], m["span_fp"], m["span_fn"]) == (1, 2, 2)
    assert m["span_precision"] == pytest.approx(1 / 3)
    assert m["span_recall"] == pytest.approx(1 / 3)
    assert m["span_f1"] == pytest.approx(1 / 3)
    pc = m["per_category"]
    assert pc["drug_decision"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 1, "fp": 0, "fn": 0, "support": 1}
    assert pc["define_problem"]["recall"] == 0.0 and pc["define_problem"]["fn"] == 1
    assert pc["treatment_goal"]["fp"] == 1 and pc["treatment_goal"]["fn"] == 1
    assert pc["advice_and_precaution"]["precision"] == 0.0
    assert set(pc) == set(M.CATEGORY_TAGS)


def test_categories_10_and_11_are_ignored():
    text = "Health care proxy is his wife. Started lasix."
    n = note("1_2_3", text, [(*at(text, "Health care proxy is his wife"), 10), (*at(text, "Started lasix"), 5)])
    preds = [(*at(text, "Started lasix"), 5), (*at(text, "Health care proxy"), 11), (0, 6, 10)]
    m = score([n], {"1_2_3": preds})
    assert (m["span_tp"], m["span_fp"], m["span_fn"]) == (1, 0, 0)
    assert m["token_f1"] == 1.0


# ---------------------------------------------------------------- documents, groups, overall


def test_empty_documents():
    text = "Started lasix."
    full = note("1_1_1", text, [(*at(text, "Started lasix"), 5)])
    empty = note("2_2_2", "")
    blank = note("3_3_3", "   \n")
    quiet = note("4_4_4", "Pain was well controlled.")
    m = score([full, empty, blank, quiet], {})
    # empty text: not in the token mean; whitespace-only: no positions -> 1; quiet and nothing predicted -> 1
    # full: gold 5 on 2 tokens, nothing predicted -> 0.  mean over 3 notes = 2/3
    assert m["token_f1"] == pytest.approx(2 / 3)
    assert m["span_f1"] == 0.0
    # predicting in a note with no gold decisions costs that note its token score
    m2 = score([quiet], {"4_4_4": [(0, 4, 9)]})
    assert m2["token_f1"] == 0.0 and m2["span_fp"] == 1
    # nothing gold, nothing predicted anywhere: official convention span F1 = 0
    assert score([quiet], {})["span_f1"] == 0.0


def test_groups_worst_and_overall_with_absent_groups():
    ta = "Started lasix today."
    tb = "Goal INR 2-3 noted."
    a = note("1_1_1", ta, [(*at(ta, "Started lasix"), 5)], gender="F", ethnicity="WHITE - RUSSIAN", language="ENGL")
    b = note("2_2_2", tb, [(*at(tb, "Goal INR 2-3"), 4)], gender="FEMALE", ethnicity="ASIAN - CHINESE", language="ENGLISH")
    c = note("3_3_3", "Pain controlled.", gender=None, ethnicity=None, language=None)  # no stats row: no group
    m = score([a, b, c], {"1_1_1": [(*at(ta, "Started lasix"), 5)]})
    # span: tp 1, fn 1 -> P 1, R .5, F1 2/3.  token: a 1, b 0, c 1 -> 2/3
    assert m["span_f1"] == pytest.approx(2 / 3)
    assert m["token_f1"] == pytest.approx(2 / 3)
    assert m["base"] == pytest.approx(2 / 3)
    g = m["groups"]
    assert set(g) == {"sex", "race", "language"}
    assert set(g["sex"]) == {"Female"}  # no Male group: it has no notes
    assert set(g["race"]) == {"White", "Asian"}
    assert set(g["language"]) == {"English"}
    # Female = English = {a, b}: span 2/3, token 1/2 -> 7/12; White = {a}: 1; Asian = {b}: 0
    assert g["sex"]["Female"]["base"] == pytest.approx(7 / 12)
    assert g["language"]["English"]["token_f1"] == pytest.approx(0.5)
    assert g["race"]["White"]["base"] == 1.0
    assert g["race"]["Asian"] == {"n_notes": 1, "n_spans": 1, "span_f1": 0.0, "token_f1": 0.0, "base": 0.0}
    assert m["worst"] == 0.0 and m["worst_group"] == "race=Asian"
    assert m["overall"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_worst_is_zero_without_demographics():
    text = "Started lasix."
    n = note("1_1_1", text, [(*at(text, "Started lasix"), 5)], gender=None, ethnicity=None, language=None)
    m = score([n], gold_predictions([n]))
    assert m["base"] == 1.0 and m["groups"] == {} and m["worst"] == 0.0 and m["overall"] == 0.5


def test_group_normalisation():
    assert sex_group("F") == sex_group(" female ") == "Female"
    assert sex_group("M") == sex_group("MALE") == "Male"
    assert sex_group("U") is None and sex_group("") is None
    assert race_group("W") == race_group("WHITE - BRAZILIAN") == "White"
    assert race_group("AA") == race_group("BLACK/AFRICAN AMERICAN") == race_group("AFRICAN") == "African American"
    assert race_group("Hisp.") == race_group("HISPANIC OR LATINO") == "Hispanic"
    assert race_group("Asian") == race_group("ASIAN - CHINESE") == "Asian"
    assert race_group("NH") == race_group("") == race_group("UNKNOWN/NOT SPECIFIED") == "Other"
    assert language_group("ENGL") == language_group("english") == "English"
    assert language_group("SPAN") == language_group("Non-ENGL") == language_group("") == "Non-English"


def test_perfect_and_unknown_predictions():
    text = "Started lasix for CHF."
    n = note("1_2_3", text, [(*at(text, "Started lasix for CHF"), 5), (*at(text, "CHF"), 3)])
    m = score([n], gold_predictions([n]))
    assert m["span_f1"] == m["token_f1"] == m["base"] == m["worst"] == m["overall"] == 1.0
    with pytest.raises(ValueError, match="not among the gold notes"):
        score([n], {"9_9_9": []})
    scorer = MedDecScorer([n])
    assert scorer.score({})["span_fn"] == 2
    assert scorer.score(gold_predictions([n]))["overall"] == 1.0


def test_score_submission_and_plot(tmp_path):
    from medprog.data.meddec import MedDecFormatError, load_meddec
    from medprog.data.synth_meddec import synth_meddec

    synth_meddec(tmp_path / "d", n=30, seed=1)
    val = load_meddec(tmp_path / "d", "val")
    everything = gold_predictions(load_meddec(tmp_path / "d"))
    write_submission(tmp_path / "all.json", everything)
    m = score_submission(tmp_path / "d", tmp_path / "all.json", split="val")  # other notes filtered out
    assert m["overall"] == 1.0 and m["n_notes"] == len(val) == 3
    assert score_submission(tmp_path / "d", tmp_path / "all.json")["overall"] == 1.0
    write_submission(tmp_path / "bad.json", {"1_2_3": [(0, 4, 5)]})
    with pytest.raises(MedDecFormatError, match="no gold annotation"):
        score_submission(tmp_path / "d", tmp_path / "bad.json")
    png = plot_per_category(m, tmp_path / "plots" / "per_category.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_baselines_in_the_shared_format():
    from medprog.programs.tagger_baselines import keyword_baseline, no_tag_baseline

    text = "Started lasix for CHF. She has a history of CHF. Started lasix."
    train = [note("1_1_1", text, [(*at(text, "Started lasix for CHF"), 5), (*at(text, "CHF"), 3)])]
    assert no_tag_baseline(train) == {"1_1_1": []}
    new_text = "Patient with CHF. Started lasix for CHF today."
    new = note("2_2_2", new_text, [(*at(new_text, "Started lasix for CHF"), 5), (*at(new_text, "CHF", 1), 3)])
    preds = keyword_baseline(train)([new])
    # the lexicon tags every whole-phrase occurrence, nested across categories, longest first
    assert preds == {"2_2_2": sorted([(*at(new_text, "CHF"), 3), (*at(new_text, "Started lasix for CHF"), 5),
                                      (*at(new_text, "CHF", 1), 3)])}
    m = score([new], preds)
    assert (m["span_tp"], m["span_fp"], m["span_fn"]) == (2, 0, 0)  # same text twice = one set element
    assert m["token_f1"] < 1.0  # but the look-alike "CHF" in the first sentence costs token F1
