"""Shared fixtures: small models built locally (nothing is downloaded)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from medprog.engines.small_model import TEST_CORPUS, SmallModelConfig, build_small_model  # noqa: E402
from medprog.signatures.tagging import DECISION_TAGS  # noqa: E402

TINY = SmallModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random tiny Qwen2 with a BPE trained on a small clinical corpus and the decision tags as tokens."""
    path = tmp_path_factory.mktemp("tiny_model")
    return build_small_model(path, TEST_CORPUS * 4, tags=DECISION_TAGS, cfg=TINY, seed=0)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from medprog.engines import make_engine

    return make_engine(f"local:{tiny_model_dir}", cache_dir=False)


@pytest.fixture(scope="session")
def smollm2_dir():
    """The prepared SmolLM2-135M-Instruct directory; in CI a missing one fails, elsewhere it skips."""
    from medprog.engines.embedded import EmbeddedModelError, resolve

    try:
        return resolve("smollm2")
    except EmbeddedModelError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{e} (the install step should have prepared it)")
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2_engine(smollm2_dir):
    """A local engine on the prepared SmolLM2 (one load per test session)."""
    from medprog.engines import make_engine

    return make_engine(f"local:{smollm2_dir}", cache_dir=False)
