"""Torch thread counts are chosen by the caller: explicit count, then $MEDPROG_TORCH_THREADS, then idle CPUs."""

import pytest
import torch

from medprog.engines.threads import THREADS_ENV, idle_cpus, set_torch_threads, torch_threads


def test_explicit_count_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert torch_threads(1) == 1
    assert torch_threads() == 3


@pytest.mark.parametrize("bad", [0, -1, "2", True])
def test_bad_counts_are_refused(bad):
    with pytest.raises(ValueError, match="positive integer"):
        torch_threads(bad)


def test_bad_environment_value_is_refused(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "two")
    with pytest.raises(ValueError, match=THREADS_ENV):
        torch_threads()


def test_default_is_the_idle_cpus_within_this_process_s_cpus(monkeypatch):
    import os

    monkeypatch.delenv(THREADS_ENV, raising=False)
    n = idle_cpus(sample_s=0.05)
    assert 1 <= n <= len(os.sched_getaffinity(0))


def test_set_torch_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        assert set_torch_threads(1) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_local_engine_leaves_thread_counts_alone(tiny_model_dir):
    from medprog.engines.spec import make_engine

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        make_engine(f"local:{tiny_model_dir}", cache_dir=False).close()
        assert torch.get_num_threads() == 1
        with pytest.raises(TypeError):
            make_engine(f"local:{tiny_model_dir}", cache_dir=False, threads=2)
    finally:
        torch.set_num_threads(before)
