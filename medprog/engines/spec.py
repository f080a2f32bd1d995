"""`--lm` specs: ``local:PATH``, ``openai:MODEL@URL[,URL...]``, ``vllm:PATH``.

``PATH`` may also name an embedded model (``local:smollm2``), which resolves to its prepared
directory; write ``./smollm2`` for a directory of that name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from medprog.engines.base import Engine
from medprog.engines.cache import RequestCache, default_cache_dir
from medprog.engines.embedded import resolve


class LMSpecError(ValueError):
    """A malformed ``--lm`` spec."""


class LMSpec(BaseModel):
    kind: Literal["local", "openai", "vllm"]
    target: str  # model path, or served model name
    urls: list[str] = []


def parse_lm_spec(spec: str) -> LMSpec:
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise LMSpecError(f"--lm {spec!r}: expected local:PATH, openai:MODEL@URL or vllm:PATH")
    if kind in ("local", "vllm"):
        return LMSpec(kind="local" if kind == "local" else "vllm", target=str(resolve(rest) or rest))
    if kind == "openai":
        model, at, urls = rest.rpartition("@")
        if not at or not model or not urls:
            raise LMSpecError(f"--lm {spec!r}: expected openai:MODEL@URL, e.g. openai:my-model@http://127.0.0.1:8000/v1")
        url_list = [u.strip() for u in urls.split(",") if u.strip()]
        if not all(u.startswith(("http://", "https://")) for u in url_list):
            raise LMSpecError(f"--lm {spec!r}: server URLs must start with http:// or https://")
        return LMSpec(kind="openai", target=model, urls=url_list)
    raise LMSpecError(f"--lm {spec!r}: unknown engine {kind!r}; expected local, openai or vllm")


def make_engine(spec: str | LMSpec, *, cache_dir: Path | str | None | Literal[False] = None, **options: Any) -> Engine:
    """Build the engine a spec names. ``cache_dir=False`` turns the request cache off."""
    s = parse_lm_spec(spec) if isinstance(spec, str) else spec
    cache = RequestCache(None if cache_dir is False else (cache_dir or default_cache_dir()))
    if s.kind == "local":
        from medprog.engines.local import LocalEngine

        return LocalEngine(s.target, cache=cache, **options)
    if s.kind == "openai":
        from medprog.engines.server import ServerEngine

        return ServerEngine(s.target, s.urls, cache=cache, **options)
    from medprog.engines.vllm_engine import VLLMEngine

    return VLLMEngine(s.target, cache=cache, **options)
