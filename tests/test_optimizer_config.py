"""Typed optimizer configs: one parser for -o / TOML, unknown keys refused, values typed and validated;
the run settings apart; the time-based schedule of the weights training loop."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medprog.cli import app
from medprog.optimizers.config import OptionError, parse_options, run_settings, split_options
from medprog.optimizers.dft_config import DFTConfig
from medprog.optimizers.dft_train import TrainingClock, time_cosine
from medprog.optimizers.ensemble_compile import EnsembleConfig
from medprog.optimizers.grpo_config import GRPOConfig
from medprog.optimizers.prompt_config import BootstrapConfig, GEPAConfig, MIPROConfig, RandomSearchConfig
from medprog.optimizers.pseudolabel import PseudolabelConfig
from medprog.optimizers.request import CompileError, RunSettings

CONFIGS = [DFTConfig, GRPOConfig, PseudolabelConfig, BootstrapConfig, RandomSearchConfig, MIPROConfig, GEPAConfig,
           EnsembleConfig]


def test_values_are_converted_to_their_field_types() -> None:
    cfg = parse_options(DFTConfig, {"max_steps": "12", "lora": "false", "loss": "ce", "learning_rate": 1},
                        optimizer="dft", base="/models/x", seed=4)
    assert (cfg.max_steps, cfg.lora, cfg.loss, cfg.learning_rate, cfg.base, cfg.seed) == (12, False, "ce", 1.0,
                                                                                         "/models/x", 4)


def test_unknown_key_names_the_valid_ones() -> None:
    with pytest.raises(OptionError, match=r"unknown option 'no_such_option' for the dft optimizer; valid options: .*"
                                          r"batch_size.*time_budget_s"):
        parse_options(DFTConfig, {"no_such_option": 1}, optimizer="dft")
    with pytest.raises(OptionError, match="unknown option 'base'"):  # set by --base, never by -o
        parse_options(DFTConfig, {"base": "x"}, optimizer="dft")


@pytest.mark.parametrize("options, message", [
    ({"loss": "mse"}, "option 'loss' of the dft optimizer: input should be 'dft' or 'ce'"),
    ({"batch_size": "many"}, "option 'batch_size' of the dft optimizer: input should be a valid integer"),
    ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ({"warmup_fraction": 1.5}, "warmup_fraction must be in"),
])
def test_bad_values_are_one_line_errors(options, message) -> None:
    with pytest.raises(OptionError, match=message):
        parse_options(DFTConfig, options, optimizer="dft")


def test_cross_field_validation() -> None:
    with pytest.raises(OptionError, match="set both num_candidates and num_trials"):
        parse_options(MIPROConfig, {"num_candidates": 2}, optimizer="mipro")
    with pytest.raises(OptionError, match="num_generations must be at least 2"):
        parse_options(GRPOConfig, {"num_generations": 1}, optimizer="grpo")
    with pytest.raises(OptionError, match="needs -o unlabelled"):
        parse_options(PseudolabelConfig, {}, optimizer="pseudolabel")
    assert parse_options(GEPAConfig, {"max_full_evals": 2}, optimizer="gepa").budget() == {"max_full_evals": 2}


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_option_is_documented(cls) -> None:
    for f in dataclasses.fields(cls):
        if f.metadata.get("option", True):
            assert len(f.metadata.get("help", "")) > 10, f"{cls.__name__}.{f.name} has no help"
    parse_options(cls, {}, optimizer="x") if cls is not PseudolabelConfig else None  # defaults are valid


def test_run_settings_are_apart_and_frozen() -> None:
    run, request, rest = split_options({"dev_limit": 2, "settings": {"window_chars": 0}, "max_steps": 3})
    assert (run, request, rest) == ({"dev_limit": 2}, {"settings": {"window_chars": 0}}, {"max_steps": 3})
    settings = run_settings({"dev_limit": "2", "threads": None, "progress": True})
    assert settings == RunSettings(dev_limit=2, progress=True) and settings.dev_examples(list(range(5))) == [0, 1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.dev_limit = 3  # type: ignore[misc]
    with pytest.raises(OptionError, match="'settings' must be a JSON object"):
        split_options({"settings": 3})
    with pytest.raises(CompileError, match="run setting 'dev_limit' must be a positive integer"):
        run_settings({"dev_limit": 0})


def test_compile_refuses_an_unknown_option_with_exit_2(tmp_path: Path) -> None:
    from medprog.data.synth_meddec import synth_meddec

    data = tmp_path / "meddec"
    synth_meddec(data, n=6, seed=0)
    r = CliRunner().invoke(app, ["compile", "tagger", "--optimizer", "dft", "--train", str(data), "--out",
                                 str(tmp_path / "art"), "-o", "no_such_option=1"])
    message = " ".join(r.stderr.split())
    assert r.exit_code == 2, r.output
    assert "unknown option 'no_such_option' for the dft optimizer" in message and "time_budget_s" in message
    assert not (tmp_path / "art").exists()


def test_time_warmup_then_cosine_over_the_budget() -> None:
    clock = TrainingClock(budget_s=2.0, max_steps=10_000)
    f = time_cosine(2.0, 10_000, 0, 0.25, clock=clock)
    assert f(0) == pytest.approx(0.01)  # warm-up by time: the first step is not wasted at zero
    time.sleep(0.25)
    assert 0.3 < f(1) < 0.8 and not clock.spent()
    time.sleep(0.35)
    assert 0.8 < f(2) <= 1.0  # warm-up over, the cosine starts from the top
    time.sleep(1.5)
    assert f(3) == 0.0 and clock.spent() and clock.progress(3) == 1.0


def test_toml_options_go_through_the_same_parser(tmp_path: Path) -> None:
    from test_artifact import write_toy_data

    data = write_toy_data(tmp_path / "train.jsonl", 4, seed=0)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'program = "test_artifact:TOY"\ntrain = "{data}"\noptimizer = "bootstrap"\nlm = "local:/nowhere"\n'
                   f'out = "{tmp_path / "art"}"\n[options]\nmax_bootstraped_demos = 2\n')
    r = CliRunner().invoke(app, ["compile", "--config", str(cfg)])
    message = " ".join(r.stderr.split())
    assert r.exit_code == 2 and "unknown option 'max_bootstraped_demos' for the bootstrap optimizer" in message
    assert "max_bootstrapped_demos" in message
