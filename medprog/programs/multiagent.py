"""Small helpers shared by the multi-agent programs (mdagents, hospital, clh, creason).

- `pmap`: run independent calls in parallel threads; each task runs in a copy of the
  caller's context, so dspy settings (LM, adapter) and accounting steps propagate.
- `with_choices`: a signature whose output field is a `Literal` over this call's own values
  (option letters, candidate codes), keeping the predictor's instructions;
  `narrowed_call` calls a predictor that way, with only the demos valid under the narrowed
  type (a demo answered "E" cannot be shown for a yes/no/maybe question).
- `tracked`: count the calls and tokens one program run spends (kept in its record).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import dspy
from pydantic import ValidationError

from medprog.engines.constraints import output_model

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 8


def pmap(fn: Callable[[T], R], items: Iterable[T], max_workers: int = MAX_WORKERS) -> list[R]:
    """``[fn(x) for x in items]`` with the calls in parallel; results keep the input order."""
    items = list(items)
    if len(items) <= 1 or max_workers <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(items)), thread_name_prefix="medprog-agent") as pool:
        futures = [pool.submit(contextvars.copy_context().run, fn, x) for x in items]
        return [f.result() for f in futures]


def with_choices(signature: type[dspy.Signature], field: str, values: Iterable[Any], *,
                 as_list: bool = False) -> type[dspy.Signature]:
    """``signature`` with output ``field`` typed ``Literal[values]`` (or ``list[Literal[values]]``)."""
    values = tuple(dict.fromkeys(values))
    if not values:
        raise ValueError(f"{signature.__name__}.{field}: no values to choose from")
    lit = Literal[values]  # type: ignore[valid-type]
    narrowed = signature.with_updated_fields(field, type_=list[lit] if as_list else lit)
    narrowed.__name__ = narrowed.__qualname__ = signature.__name__  # step names and schema titles stay
    return narrowed


def _fits(signature: type[dspy.Signature], demo: Any) -> bool:
    values = dict(demo)
    if not all(k in values for k in signature.output_fields):
        return True  # an inputs-only demo: the adapter skips it anyway
    try:
        output_model(signature).model_validate({k: values[k] for k in signature.output_fields})
    except ValidationError:
        return False
    return True


def narrowed_call(predictor: dspy.Predict, field: str, values: Iterable[Any], *, as_list: bool = False,
                  **inputs: Any) -> dspy.Prediction:
    """Call ``predictor`` with ``field`` narrowed to ``values`` and the demos that fit that type."""
    sig = with_choices(predictor.signature, field, values, as_list=as_list)
    demos = [d for d in predictor.demos if _fits(sig, d)]
    return predictor(signature=sig, demos=demos, **inputs)


def usage_summary(tracker: Any) -> dict[str, int]:
    """Calls and tokens recorded by a ``dspy.track_usage()`` tracker."""
    entries = [e for es in tracker.usage_data.values() for e in es]
    return {
        "calls": len(entries),
        "prompt_tokens": sum(int(e.get("prompt_tokens") or 0) for e in entries),
        "completion_tokens": sum(int(e.get("completion_tokens") or 0) for e in entries),
    }


@contextlib.contextmanager
def tracked() -> Iterator[dict[str, int]]:
    """Collect the calls and tokens of the LM calls made inside (also from `pmap` threads)."""
    usage: dict[str, int] = {}
    with dspy.track_usage() as tracker:
        try:
            yield usage
        finally:
            usage.update(usage_summary(tracker))
