"""The local engine: constrained batched generation, dynamic batching, cache, accounting, errors."""

import json
from concurrent.futures import ThreadPoolExecutor

import dspy
import pytest

from medprog.engines import TaggedConstraint, make_engine
from medprog.engines.base import Sampling
from medprog.engines.local import ModelPathError
from medprog.signatures.adapter import MedprogAdapter
from medprog.signatures.tagging import DECISION_TAGS, TagDecisions

NOTES = [f"Patient {i} was started on aspirin {i} mg daily. Will follow up in {i} weeks." for i in range(6)]


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelPathError, match="does not exist"):
        make_engine(f"local:{tmp_path / 'nope'}")
    with pytest.raises(ModelPathError, match="no config.json"):
        make_engine(f"local:{tmp_path}")


def test_concurrent_single_calls_batch_and_match_serial(tiny_engine):
    def one(note):
        c = TaggedConstraint(text=note, tags=list(DECISION_TAGS))
        return tiny_engine.generate([[{"role": "user", "content": note}]], [c], Sampling())[0].text

    serial = [one(n) for n in NOTES]
    with ThreadPoolExecutor(6) as pool:
        threaded = list(pool.map(one, NOTES))
    assert serial == threaded


def test_cache_and_accounting(tiny_model_dir, tmp_path):
    engine = make_engine(f"local:{tiny_model_dir}", cache_dir=tmp_path / "cache")
    lm = engine.as_lm(max_tokens=64)
    with dspy.context(lm=lm, adapter=MedprogAdapter()):
        first = dspy.Predict(TagDecisions)(note=NOTES[0])
        second = dspy.Predict(TagDecisions)(note=NOTES[0])
    assert first.tagged == second.tagged
    snap = engine.ledger.snapshot()
    assert snap["total"]["calls"] == 2 and snap["total"]["cache_hits"] == 1
    assert "TagDecisions" in snap["steps"]
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    files = list((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["text"] == str(first.tagged)


def test_cache_put_of_one_key_from_many_threads(tmp_path):
    """Identical requests in flight together write one key at once (windows repeat across notes)."""
    import stat
    from concurrent.futures import ThreadPoolExecutor

    from medprog.engines.cache import RequestCache

    cache = RequestCache(tmp_path / "c")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: cache.put("same-key", {"text": "x" * 1000, "i": i}), range(200)))
    assert cache.get("same-key")["text"] == "x" * 1000
    files = [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600  # no temporary left behind
