"""The program registry: declared capabilities, glue picked up by name, references artifacts store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dspy
import pytest

from medprog.optimizers.ensemble_compile import compile_ensemble, ensemble_inputs
from medprog.optimizers.grpo import reward_functions
from medprog.optimizers.request import CompileError, CompileRequest
from medprog.programs.registry import HOOKS, available, get_program, program_ref, registered_name, resolve_program


@pytest.mark.parametrize("name", ["tagger", "clh", "mdagents", "mcq", "hospital", "creason"])
def test_declare_takes_the_module_functions_and_hooks(name: str) -> None:
    info = get_program(name)
    module = __import__(info.ref.partition(":")[0], fromlist=["PROGRAM"])
    assert info.ref == f"{module.__name__}:PROGRAM" and module.PROGRAM is info
    for part in ("to_record", "build"):
        assert callable(getattr(info, part))
    for hook in HOOKS:
        assert (getattr(info, hook) is not None) == callable(getattr(module, hook, None))


def test_mcq_reuses_mdagents_data_and_metric() -> None:
    mcq, mda = get_program("mcq"), get_program("mdagents")
    assert (mcq.load, mcq.metrics, mcq.score) == (mda.load, mda.metrics, mda.score)
    assert mcq.to_record is not mda.to_record


def test_only_span_programs_feed_an_ensemble_or_reward_by_metric_keys() -> None:
    declared = {n: (get_program(n).ensemble is not None, get_program(n).reward_metrics) for n in available()}
    assert declared["tagger"] == (True, ("span_f1", "token_f1"))
    assert all(v == (False, ()) for n, v in declared.items() if n != "tagger")


def test_an_artifact_names_registered_programs_by_name_and_others_by_reference() -> None:
    tagger = get_program("tagger")
    assert registered_name(tagger) == "tagger" == program_ref(tagger)
    copy = dataclasses.replace(tagger, ref="somewhere.else:PROGRAM")
    assert registered_name(copy) is None and program_ref(copy) == "somewhere.else:PROGRAM"
    assert resolve_program("medprog.programs.creason:PROGRAM") is get_program("creason")


def test_a_renamed_copy_keeps_its_capabilities_in_generic_code(tmp_path: Path) -> None:
    """Generic code reads the declaration, not the name: a copy of the tagger under another name
    still gets metric-key rewards and an ensemble; a program without spans is refused by name."""
    tagger = dataclasses.replace(get_program("tagger"), name="my-tagger")
    creason = get_program("creason")
    sig = tagger.build().tag.signature
    assert [f.__name__ for f in reward_functions(tagger, sig, {}, constrained=True)] == ["span_f1_reward",
                                                                                         "token_f1_reward"]
    assert ensemble_inputs(tagger).submission == "predictions.json"
    with pytest.raises(CompileError, match="creason declares none"):
        compile_ensemble(CompileRequest(program=creason, train=[], dev=[dspy.Example(id="x")], lm=None, teacher=None,
                                        out=tmp_path / "art", members=["a", "b"]))
    with pytest.raises(CompileError, match="creason declares none"):
        ensemble_inputs(creason)
