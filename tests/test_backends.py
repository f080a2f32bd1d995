"""The local engine's grammar backends come from one registry that refuses unknown names."""

import json

import pytest

from medprog.engines.backends import BACKENDS, LLGuidanceBackend, OutlinesCoreBackend, XGrammarBackend, get_backend
from medprog.engines.constraints import ChoiceConstraint, JsonConstraint
from medprog.engines.spec import make_engine


def test_unknown_backend_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="json_backend 'nope': expected one of llguidance, xgrammar, outlines_core"):
        get_backend("nope", None, None)


def test_registry_maps_names_to_their_backends():
    assert get_backend("llguidance", None, None).__class__ is LLGuidanceBackend
    assert get_backend("outlines_core", None, None).__class__ is OutlinesCoreBackend
    assert get_backend("xgrammar", None, None).__class__ is XGrammarBackend
    assert list(BACKENDS) == ["llguidance", "xgrammar", "outlines_core"]


def test_the_engine_refuses_an_unknown_backend_before_generating(tiny_model_dir):
    with pytest.raises(ValueError, match="expected one of"):
        make_engine(f"local:{tiny_model_dir}", cache_dir=False, json_backend="regexp")


@pytest.mark.parametrize("name", ["llguidance", "outlines_core", "xgrammar"])
def test_each_backend_keeps_outputs_inside_the_constraint(tiny_model_dir, name):
    from medprog.engines.base import Sampling

    if name == "xgrammar":
        pytest.importorskip("xgrammar")

    engine = make_engine(f"local:{tiny_model_dir}", cache_dir=False, json_backend=name)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    prompts = [[{"role": "user", "content": "answer"}]] * 2
    json_out, choice_out = engine.generate(
        prompts, [JsonConstraint(json_schema=schema), ChoiceConstraint(choices=["yes", "no"])],
        Sampling(max_tokens=16))
    engine.close()
    assert json_out.error is None and isinstance(json.loads(json_out.text)["ok"], bool)
    assert choice_out.error is None and choice_out.text in {"yes", "no"}
