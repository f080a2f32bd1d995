"""Typed contracts: one file per task family; no I/O, no model calls."""

from medprog.signatures.base import Signature, TaggedText, UnconstrainableOutputError

__all__ = ["Signature", "TaggedText", "UnconstrainableOutputError"]
