"""DFT on a pretrained base whose tokenizer has no tag tokens (as SmolLM2): the tags stay several
ordinary tokens, and training runs on the tagging constraint's choices, not the whole vocabulary."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from medprog.data.synth_meddec import synth_meddec
from medprog.engines.small_model import TEST_CORPUS, SmallModelConfig, build_small_model
from medprog.optimizers.dft_config import DFTConfig
from medprog.optimizers.dft_train import train_dft, uses_choices
from medprog.programs import tagger
from medprog.signatures.tagging import TagDecisions

pytestmark = pytest.mark.slow

TINY = SmallModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128)


def test_base_without_tag_tokens_trains_on_the_choices(tmp_path):
    base = build_small_model(tmp_path / "base", TEST_CORPUS * 4, tags=(), cfg=TINY, seed=0)
    vocab = len(AutoTokenizer.from_pretrained(base))
    synth_meddec(tmp_path / "data", n=10, seed=3)
    examples = tagger.train_examples(tagger.load(tmp_path / "data", "train"), tagger.PROGRAM.defaults)[:8]
    cfg = DFTConfig(base=str(base), max_steps=2, batch_size=4, threads=1)
    assert uses_choices(TagDecisions, cfg)
    report = train_dft(TagDecisions, examples, tmp_path / "out", cfg, log=lambda *_: None)
    assert report["objective"] == "choice" and report["copy_weight"] == 1.0 and report["steps"] == 2
    saved = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert len(saved) == vocab  # no rows added: a tag is written in the base's own tokens
    assert len(saved("<drug_decision>", add_special_tokens=False)["input_ids"]) > 1
    assert json.loads((tmp_path / "out" / "training_report.json").read_text())["objective"] == "choice"
