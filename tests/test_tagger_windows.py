"""The tagger's sentence windows, and the training path they feed (shared prefix, category loss, schedule)."""

from __future__ import annotations

import dspy
import pytest
import torch

from medprog.data.sentences import sentence_spans, windows
from medprog.engines.tagging import parse_tagged
from medprog.programs.tagger import Tagger, train_examples

NOTE = ("History of Present Illness:\n60 yo M with CHF.  Started on diltiazem 30 mg BID.\n"
        "Blood cultures were sent. Please stop taking aspirin. Follow up with Dr. [**Name**] in 2 weeks.")
GOLD = ("History of Present Illness:\n60 yo M with CHF.  <drug_decision>Started on diltiazem 30 mg BID</drug_decision>.\n"
        "<gather_info>Blood cultures were sent</gather_info>. Please <drug_decision>stop taking aspirin</drug_decision>. "
        "<contact_related>Follow up with Dr. [**Name**] in 2 weeks</contact_related>.")


def test_windows_group_whole_sentences_and_leave_only_whitespace_between():
    sentences = sentence_spans(NOTE)
    assert len(sentences) == 5
    for limit in (1, 40, 80, 10_000):
        ws = windows(NOTE, limit)
        assert ws[0][0] == sentences[0][0] and ws[-1][1] == sentences[-1][1]
        assert all(NOTE[b:a].strip() == "" for (_, b), (a, _) in zip(ws, ws[1:]))
        assert all(b - a <= limit or (a, b) in sentences for a, b in ws)  # only a lone long sentence exceeds
    assert windows(NOTE, 1) == sentences and len(windows(NOTE, 10_000)) == 1


def _example(tagged: str = GOLD) -> dspy.Example:
    return dspy.Example(id="n1", note=NOTE, tagged=tagged).with_inputs("note")


@pytest.mark.parametrize("window_chars", [1, 60, 0])
def test_train_examples_cut_gold_into_windows_with_shifted_offsets(window_chars):
    out = train_examples([_example()], {"window_chars": window_chars})
    _, gold = parse_tagged(GOLD)
    if window_chars <= 0:
        assert len(out) == 1 and out[0].tagged == GOLD
        return
    assert len(out) == len(windows(NOTE, window_chars)) and [e.id for e in out][:2] == ["n1:0", "n1:1"]
    rebuilt = []
    for ex, (a, _) in zip(out, windows(NOTE, window_chars)):
        text, spans = parse_tagged(ex.tagged)
        assert text == ex.note == NOTE[a:a + len(text)]
        assert [(d["start"], d["end"]) for d in ex.meddec["decisions"]] == [(s.start, s.end) for s in spans]
        rebuilt += [(s.start + a, s.end + a, s.tag) for s in spans]
    assert rebuilt == [(s.start, s.end, s.tag) for s in gold]


class _Echo(dspy.Module):
    """Stands in for the constrained predictor: tags every window whole, records what it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def __call__(self, note: str) -> dspy.Prediction:
        self.sent.append(note)
        return dspy.Prediction(tagged=f"<gather_info>{note}</gather_info>")


def test_tagger_reassembles_window_outputs_at_the_right_offsets():
    program = Tagger(window_chars=60)
    program.tag = _Echo()
    tagged = program(note=NOTE).tagged
    text, spans = parse_tagged(tagged)
    assert text == NOTE
    assert [(s.start, s.end) for s in spans] == windows(NOTE, 60) == \
        [(NOTE.index(w), NOTE.index(w) + len(w)) for w in program.tag.sent]
    whole = Tagger(window_chars=0)
    whole.tag = _Echo()
    assert parse_tagged(whole(note=NOTE).tagged)[1][0].end == len(NOTE) and whole.tag.sent == [NOTE]


def _batch(tiny_engine, examples):
    from medprog.optimizers.batches import collator, training_rows
    from medprog.signatures.tagging import TagDecisions

    rows = training_rows(TagDecisions, examples, tiny_engine.tokenizer, choice=True)
    return collator(tiny_engine.tokenizer.pad_token_id)(rows)


@pytest.mark.parametrize("category_weight", [0.0, 1.0])
def test_shared_prefix_gives_the_same_loss_and_gradients(tiny_engine, category_weight):
    from medprog.optimizers.losses import training_loss

    model = tiny_engine.model
    batch = _batch(tiny_engine, train_examples([_example()], {"window_chars": 1}))
    assert batch["shared_prefix"] > 10  # system prompt and template up to the note
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    shared = training_loss(model, batch, "ce", category_weight=category_weight)
    g_shared = torch.autograd.grad(shared, params)
    full = training_loss(model, {**batch, "shared_prefix": 0}, "ce", category_weight=category_weight)
    g_full = torch.autograd.grad(full, params)
    model.eval()
    assert torch.allclose(shared, full, atol=1e-5)
    for a, b in zip(g_shared, g_full):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_category_loss_covers_only_gold_openings(tiny_engine):
    from medprog.optimizers.losses import training_loss

    model = tiny_engine.model
    tagged = _batch(tiny_engine, [_example()])
    untagged = _batch(tiny_engine, [_example(NOTE)])
    with torch.no_grad():
        assert training_loss(model, tagged, "ce", category_weight=1.0) > training_loss(model, tagged, "ce")
        assert torch.equal(training_loss(model, untagged, "ce", category_weight=1.0), training_loss(model, untagged, "ce"))
    opens = tagged["dp_opens"].gather(1, tagged["dp_targets"][:, None]).squeeze(1)
    assert int(opens.sum()) == 4  # four gold spans open


def test_time_cosine_ends_low_when_the_budget_runs_out_first():
    import time

    from medprog.optimizers.dft_train import time_cosine

    f = time_cosine(budget_s=0.2, max_steps=1000, warmup_steps=10)
    assert f(0) == pytest.approx(0.1) and f(20) > 0.9
    time.sleep(0.25)
    assert f(30) == 0.0  # 3% of the steps, all of the time
    g = time_cosine(budget_s=1e6, max_steps=100, warmup_steps=10)
    g(0)
    assert g(55) == pytest.approx(0.5, abs=1e-3) and g(100) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_training_fills_its_wall_clock_budget(tmp_path):
    """No step count is fixed from a probe: the run ends when its time is spent, with steps to spare."""
    import json

    from medprog.engines.threads import set_torch_threads
    from medprog.optimizers.dft_config import DFTConfig
    from medprog.optimizers.dft_train import train_dft
    from medprog.signatures.tagging import TagDecisions

    examples = train_examples([_example()], {"window_chars": 60})
    cfg = DFTConfig(time_budget_s=15.0, batch_size=1, max_epochs=10_000, log_every=1)
    threads = torch.get_num_threads()
    set_torch_threads()
    try:
        report = train_dft(TagDecisions, examples, tmp_path / "m", cfg, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    assert 15.0 <= report["train_wall_s"] < 15.0 + 20.0  # one slow step may overrun on a busy machine
    assert report["steps"] > 1 and report["epochs"] < cfg.max_epochs  # stopped by time, not by a step count
    assert len(report["loss_history"]) == report["steps"]  # a loss logged at every step
    saved = json.loads((tmp_path / "m" / "training_report.json").read_text())
    assert saved["objective"] == "choice" and (tmp_path / "m" / "model.safetensors").is_file()
