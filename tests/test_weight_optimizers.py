"""`compile tagger` with the weight optimizers from the command line: dft → grpo, dft → pseudolabel (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medprog.data.synth_meddec import synth_meddec

pytestmark = pytest.mark.slow


def medprog(*args):
    r = subprocess.run([sys.executable, "-m", "medprog.cli", *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    data = root / "meddec"
    synth_meddec(data, n=30, seed=5)
    art = root / "dft"
    medprog("compile", "tagger", "--optimizer", "dft", "--train", data, "--out", art,
            "-o", "max_steps=12", "-o", "dev_limit=2", "-o", "batch_size=4")
    return data, art


def test_dft_trains_windows_on_the_choice_objective(compiled):
    _, art = compiled
    report = json.loads((art / "report.json").read_text())
    training = report["training"]
    assert training["objective"] == "choice" and training["from_scratch"] and training["steps"] == 12
    assert training["category_weight"] == 1.0
    assert training["examples"] > 20  # one per window, more than the notes
    assert (art / "weights" / "model.safetensors").is_file()
    settings = json.loads((art / "program.json").read_text())["settings"]
    assert settings["window_chars"] > 0
    assert settings["tag_limits"]["max_opens_per_position"] >= 2  # derived from the training notes, +1
    assert {"span_f1", "token_f1"} <= set(report["dev"]["metrics"])


def test_grpo_samples_under_the_tagging_constraint(compiled, tmp_path):
    data, art = compiled
    out = tmp_path / "grpo"
    medprog("compile", "tagger", "--optimizer", "grpo", "--base", art, "--train", data, "--out", out,
            "-o", "steps=2", "-o", "num_generations=2", "-o", "batch_size=4", "-o", "limit=4")
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["constrained"] is True
    history = report["reward_history"]
    assert len(history) == 2 and all(0.0 <= h["reward"] for h in history)
    assert set(history[0]) >= {"rewards/span_f1_reward/mean", "rewards/token_f1_reward/mean"}
    assert not any("fidelity" in k for k in history[0])  # every constrained rollout is faithful
    assert (out / "weights" / "model.safetensors").is_file()


def test_pseudolabel_keeps_the_most_confident_windows(compiled, tmp_path):
    data, art = compiled
    out = tmp_path / "pseudo"
    medprog("compile", "tagger", "--optimizer", "pseudolabel", "--base", art, "--train", data, "--out", out,
            "-o", f"unlabelled={data}:test", "-o", "quantile=0.5", "-o", "max_steps=4", "-o", "batch_size=4")
    report = json.loads((out / "report.json").read_text())
    assert report["confidence"] == "choice NLL"
    assert report["candidates"] > report["labelled_ok"] > 0  # windows of the labelled notes
    assert report["kept"] == round(0.5 * report["candidates"])
    assert report["kept_mean_nll"] == sorted(report["kept_mean_nll"])
    assert report["training"]["objective"] == "choice" and not report["training"]["from_scratch"]
    assert "span_f1" in report["dev_before"] and "span_f1" in report["dev_after"]
