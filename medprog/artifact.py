"""Compiled programs on disk: save, verify, load — JSON only, never pickles.

An artifact directory holds:

- ``program.json`` — program name, reference and version; the build settings; per step
  (per predictor) the instructions, demos and LM config; default engine settings; ensemble
  parameters; the medprog and dependency versions; a ``files`` map (sha256 of every file
  under ``weights/``) and ``hash``, a sha256 over the rest of the body (so it covers the
  weights too);
- ``weights/`` (optional) — safetensors and tokenizer files; the artifact's default
  ``--lm`` is then ``local:weights``, stored relative to the artifact;
- ``report.json`` — dev metrics, calls, tokens and wall time per step (not hashed: it
  describes the program, it does not change what it does).

`load_artifact` rebuilds the module with the program's own ``build(**settings)`` and
applies instructions and demos per predictor. A tampered, truncated or incompatible
artifact raises `ArtifactError` naming the file and the problem.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "medprog-artifact"
FORMAT_VERSION = 1
PROGRAM_FILE = "program.json"
REPORT_FILE = "report.json"
WEIGHTS_DIR = "weights"
DEPENDENCIES = ("dspy", "pydantic", "transformers", "outlines", "torch", "tokenizers", "safetensors", "peft", "trl")


class ArtifactError(ValueError):
    """An artifact that cannot be loaded: the message names the file and what is wrong."""


# ---------------------------------------------------------------------------------------
# versions, hashing, JSON


def medprog_version() -> str:
    try:
        return importlib.metadata.version("medprog")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def dependency_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape a program's behaviour (read from metadata, no imports)."""
    out = {}
    for name in DEPENDENCIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def body_hash(body: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of ``program.json`` without its ``hash`` key."""
    blob = json.dumps({k: v for k, v in body.items() if k != "hash"}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def to_jsonable(value: Any) -> Any:
    """Plain JSON values for demos and settings (pydantic models dumped, tuples as lists)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} in an artifact (JSON only)")


def write_json_private(path: Path, value: Any) -> None:
    """Write JSON atomically, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def program_ref(info: Any) -> str:
    """How an artifact names its program (`medprog.programs.registry.program_ref`), or an error."""
    from medprog.programs.registry import program_ref as ref_of

    ref = ref_of(info)
    if ref is None:
        raise ArtifactError(f"program {info.name!r} is neither registered nor a module attribute; "
                            "define it at module level so an artifact can name it as module:ATTR")
    return ref


# ---------------------------------------------------------------------------------------
# module state: instructions, demos and config per predictor


def _field_value(annotation: Any, value: Any) -> Any:
    """Restore a JSON value to its declared field type (so demos render exactly as when compiled)."""
    import pydantic

    try:
        return pydantic.TypeAdapter(annotation).validate_python(value)
    except (pydantic.ValidationError, TypeError, pydantic.errors.PydanticUserError):
        return value


def module_state(module: Any) -> dict[str, dict[str, Any]]:
    """``{predictor name: {signature, instructions, demos, config}}`` as plain JSON."""
    state: dict[str, dict[str, Any]] = {}
    for name, pred in module.named_predictors():
        sig = pred.signature
        keep = set(sig.input_fields) | set(sig.output_fields)
        demos = []
        for demo in pred.demos:
            d = dict(demo.items()) if hasattr(demo, "items") else dict(demo)
            row = {k: to_jsonable(v) for k, v in d.items() if k in keep}
            if d.get("augmented"):
                row["augmented"] = True
            demos.append(row)
        state[name] = {
            "signature": sig.__name__,
            "instructions": sig.instructions,
            "demos": demos,
            "config": to_jsonable(dict(getattr(pred, "config", {}) or {})),
        }
    return state


def set_instructions(predictor: Any, instructions: str) -> None:
    """Replace a predictor's instructions, keeping its signature's class name (used for per-step accounting)."""
    sig = predictor.signature
    if sig.instructions == instructions:
        return
    new = sig.with_instructions(instructions)
    new.__name__ = sig.__name__
    new.__qualname__ = getattr(sig, "__qualname__", sig.__name__)
    predictor.signature = new


def apply_state(module: Any, state: dict[str, dict[str, Any]], *, where: str = "state") -> None:
    """Set instructions, demos and config per predictor from `module_state` output."""
    import dspy

    predictors = dict(module.named_predictors())
    unknown = sorted(set(state) - set(predictors))
    if unknown:
        raise ArtifactError(f"{where}: step(s) {unknown} are not in the program (its steps: {sorted(predictors)})")
    for name, st in state.items():
        pred = predictors[name]
        if "instructions" in st and st["instructions"] is not None:
            set_instructions(pred, str(st["instructions"]))
        fields = {**pred.signature.input_fields, **pred.signature.output_fields}
        demos = []
        for raw in st.get("demos") or []:
            if not isinstance(raw, dict):
                raise ArtifactError(f"{where}: step {name!r}: a demo is not a JSON object")
            values = {k: (_field_value(fields[k].annotation, v) if k in fields else v) for k, v in raw.items()}
            demos.append(dspy.Example(**values))
        pred.demos = demos
        if st.get("config"):
            pred.config = dict(st["config"])


def restore_signature_names(module: Any, names: dict[str, str]) -> None:
    """Give each predictor's signature back its original class name (optimizers' rewrites drop it)."""
    for pname, pred in module.named_predictors():
        if pname in names and pred.signature.__name__ != names[pname]:
            pred.signature.__name__ = names[pname]


# ---------------------------------------------------------------------------------------
# save


def save_artifact(out: str | Path, info: Any, module: Any, *, settings: dict[str, Any] | None = None,
                  report: dict[str, Any] | None = None, weights: str | Path | None = None,
                  default_lm: str | None = None, ensemble: dict[str, Any] | None = None,
                  engine: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a compiled program to ``out`` (created owner-only) and return ``out``.

    ``weights`` is a directory copied to ``out/weights`` (unless it already is that
    directory); with weights and no ``default_lm``, the default engine is ``local:weights``.
    ``engine`` holds default LM settings (max_tokens, temperature); ``extra`` any other JSON
    the optimizer wants to keep (it is hashed with the rest).
    """
    from medprog.engines.cache import private_dir

    out = private_dir(Path(out))
    wdir = out / WEIGHTS_DIR
    if weights is not None:
        src = Path(weights)
        if not src.is_dir():
            raise ArtifactError(f"weights {src}: not a directory")
        if src.resolve() != wdir.resolve():
            if wdir.exists():
                shutil.rmtree(wdir)
            shutil.copytree(src, wdir)
        if default_lm is None:
            default_lm = f"local:{WEIGHTS_DIR}"
    files = {}
    if wdir.is_dir():
        for p in sorted(wdir.rglob("*")):
            if p.is_file():
                files[p.relative_to(out).as_posix()] = file_sha256(p)
    body: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "program": {"name": info.name, "ref": program_ref(info), "version": str(info.version)},
        "settings": to_jsonable(dict(settings if settings is not None else info.defaults)),
        "steps": module_state(module),
        "engine": to_jsonable(engine or {}),
        "default_lm": default_lm,
        "ensemble": to_jsonable(ensemble) if ensemble is not None else None,
        "extra": to_jsonable(extra or {}),
        "versions": {"medprog": medprog_version(), **dependency_versions()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    }
    body["hash"] = body_hash(body)
    write_json_private(out / PROGRAM_FILE, body)
    write_json_private(out / REPORT_FILE, to_jsonable(report or {}))
    return out


# ---------------------------------------------------------------------------------------
# load


@dataclass
class Artifact:
    """A loaded artifact: the program's info, its rebuilt module, and what was stored with it."""

    path: Path
    info: Any
    module: Any
    default_lm: str | None
    settings: dict[str, Any]
    engine_settings: dict[str, Any]
    ensemble: dict[str, Any] | None
    report: dict[str, Any]
    body: dict[str, Any] = field(repr=False)
    _engine: Any = field(default=None, repr=False)

    @property
    def hash(self) -> str:
        return self.body["hash"]

    def engine(self, lm: str | None = None, **options: Any):
        """An engine for ``lm`` (default: the artifact's own model), built once and reused."""
        if lm is None and self._engine is not None:
            return self._engine
        spec = lm or self.default_lm
        if spec is None:
            raise ArtifactError(f"{self.path}: the artifact has no model of its own; pass an lm spec")
        from medprog.engines.spec import make_engine

        eng = make_engine(spec, **options)
        if lm is None:
            self._engine = eng
        return eng

    def __call__(self, lm: str | None = None, **inputs: Any):
        """Run the program on one input under medprog's adapter and the artifact's engine settings."""
        import dspy

        from medprog.signatures.adapter import MedprogAdapter

        active = dspy.settings.lm if lm is None and self.default_lm is None else None
        lm_obj = active or self.engine(lm).as_lm(**{"temperature": 0.0, **self.engine_settings})
        with dspy.context(lm=lm_obj, adapter=MedprogAdapter()):
            return self.module(**inputs)


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ArtifactError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg}); "
                            "the file is truncated or corrupted") from None
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{path}: not UTF-8 text ({e.reason})") from None


def verify_artifact(path: str | Path) -> dict[str, Any]:
    """Check format, version, content hash and weight files; return the ``program.json`` body."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not an artifact directory")
    pfile = path / PROGRAM_FILE
    body = _read_json(pfile, "every artifact has one")
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ArtifactError(f"{pfile}: not a medprog artifact (no \"format\": \"{FORMAT}\")")
    fv = body.get("format_version")
    if not isinstance(fv, int) or fv > FORMAT_VERSION or fv < 1:
        raise ArtifactError(f"{pfile}: artifact format version {fv!r} is not supported by medprog "
                            f"{medprog_version()} (it reads version {FORMAT_VERSION}); upgrade medprog or recompile")
    for key in ("program", "steps", "files", "hash", "versions"):
        if key not in body:
            raise ArtifactError(f"{pfile}: missing key {key!r}; the file is incomplete")
    if body_hash(body) != body["hash"]:
        raise ArtifactError(f"{pfile}: content hash mismatch (stored {body['hash']}, computed {body_hash(body)}); "
                            "the file was edited or corrupted after it was written")
    files: dict[str, str] = body["files"]
    wdir = path / WEIGHTS_DIR
    present = {p.relative_to(path).as_posix() for p in wdir.rglob("*") if p.is_file()} if wdir.is_dir() else set()
    for rel in sorted(files):
        if rel not in present:
            raise ArtifactError(f"{path / rel}: missing (listed in {PROGRAM_FILE})")
        if file_sha256(path / rel) != files[rel]:
            raise ArtifactError(f"{path / rel}: content hash mismatch; the weights file was changed or corrupted")
    extra = sorted(present - set(files))
    if extra:
        raise ArtifactError(f"{path / extra[0]}: not listed in {PROGRAM_FILE}; weights were added after compiling")
    major = str(body["versions"].get("medprog", "0")).split(".")[0]
    if major != medprog_version().split(".")[0]:
        raise ArtifactError(f"{pfile}: written by medprog {body['versions'].get('medprog')}, which is incompatible "
                            f"with the installed medprog {medprog_version()}; recompile")
    return body


def load_artifact(path: str | Path) -> Artifact:
    """Verify and load an artifact directory: the rebuilt module and what was stored with it."""
    path = Path(path)
    body = verify_artifact(path)
    pfile = path / PROGRAM_FILE
    prog = body["program"]
    ref = prog.get("ref") or prog.get("name")
    from medprog.engines.embedded import REGISTRY as EMBEDDED_MODELS
    from medprog.programs.registry import resolve_program

    info = resolve_program(ref)
    if str(info.version) != str(prog.get("version")):
        raise ArtifactError(f"{pfile}: compiled for {info.name} version {prog.get('version')}, but the installed "
                            f"{info.name} is version {info.version}; recompile")
    report_path = path / REPORT_FILE
    report = _read_json(report_path, "the compile report") if report_path.exists() else {}
    settings = dict(body.get("settings") or {})
    try:
        module = info.build(**settings)
    except TypeError as e:
        raise ArtifactError(f"{pfile}: settings {settings} do not fit {info.name}: {e}") from None
    apply_state(module, body["steps"], where=str(pfile))
    default_lm = body.get("default_lm")
    if isinstance(default_lm, str) and default_lm.startswith("local:"):
        target = Path(default_lm[len("local:"):]).expanduser()
        # a relative path lies inside the artifact (weights/); an embedded model's name stays a name
        if not target.is_absolute() and str(target) not in EMBEDDED_MODELS:
            default_lm = f"local:{(path / target).resolve()}"
    return Artifact(path=path, info=info, module=module, default_lm=default_lm, settings=settings,
                    engine_settings=dict(body.get("engine") or {}), ensemble=body.get("ensemble"),
                    report=report if isinstance(report, dict) else {}, body=body)


def is_artifact(path: str | Path) -> bool:
    return (Path(path) / PROGRAM_FILE).is_file()
