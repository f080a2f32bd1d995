"""Rows of a data file in the forms users keep it: JSON Lines, parquet, CSV, or a ``datasets``
directory written by ``save_to_disk``. Each row comes with where it is (``file:line`` for JSON
Lines, ``file:row N`` for tabular data, N counting data rows from 1) so a loader's per-row
validation can name it in a one-line error.

JSON Lines is read line by line rather than through ``datasets``' json builder: that builder
unifies all rows into one schema (so an ``options`` object with 4 keys gains the keys of a row
with 5 as nulls) and loses line numbers. Columnar formats always have a schema, so in their
rows a null means "absent" and is dropped, nested dicts included.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

TABULAR = {".parquet": "parquet", ".csv": "csv"}
ACCEPTED = (".jsonl", ".json", *TABULAR, "a directory saved by datasets' save_to_disk")


class RowFormatError(ValueError):
    """A data file medprog cannot read as rows; the message names the file and what was expected."""


class Row(NamedTuple):
    where: str
    """``file:line`` or ``file:row N``, for error messages."""
    position: int
    """0-based position (the default id of a row without one)."""
    value: Any


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a directory written by ``Dataset.save_to_disk`` (or ``DatasetDict``'s)."""
    return path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json"))


def resolve(path: str | Path, split: str | None, what: str) -> Path:
    """The file (or saved dataset) to read: ``path`` itself, or ``DIR/<split>.{jsonl,parquet,csv}``
    (split default ``test``) for a plain directory."""
    path = Path(path)
    if path.is_dir() and not is_saved_dataset(path):
        name = split or "test"
        found = [path / f"{name}{s}" for s in (".jsonl", *TABULAR) if (path / f"{name}{s}").is_file()]
        path = found[0] if found else path / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {what}")
    return path


def read_rows(path: str | Path, split: str | None = None, error: type[ValueError] = RowFormatError) -> Iterator[Row]:
    """Rows of a resolved data path (see `resolve`); ``error`` is the loader's format-error class."""
    path = Path(path)
    if is_saved_dataset(path):
        yield from _tabular_rows(path, _load_saved(path, split))
    elif path.suffix in TABULAR:
        yield from _tabular_rows(path, _load_file(path, TABULAR[path.suffix]))
    elif path.suffix in (".jsonl", ".json"):
        yield from _jsonl_rows(path, error)
    else:
        raise error(f"{path}: unknown data format {path.suffix!r}; expected one of: {', '.join(ACCEPTED)}")


def _jsonl_rows(path: Path, error: type[ValueError]) -> Iterator[Row]:
    with path.open(encoding="utf-8") as f:
        yield from jsonl_rows(f, path, error)


def jsonl_rows(
    lines: Iterable[str], path: str | Path, error: type[ValueError] = RowFormatError, hint: str = ""
) -> Iterator[Row]:
    """Parsed JSON Lines, blank lines skipped; invalid JSON raises ``error`` naming ``path:line``
    (with ``hint`` appended, e.g. what may have caused it)."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{n}: not valid JSON ({e.msg}){hint}") from None
        yield Row(f"{path}:{n}", n - 1, value)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _tabular_rows(path: Path, dataset: Any) -> Iterator[Row]:
    for i, row in enumerate(dataset):
        yield Row(f"{path}:row {i + 1}", i, _drop_nulls(row))


def _load_file(path: Path, builder: str) -> Any:
    """A parquet or CSV file as a `datasets.Dataset`, in memory, its builder cache in a temporary
    directory (patient data leaves no copy in a shared cache)."""
    import datasets

    with tempfile.TemporaryDirectory(prefix="medprog-rows-") as cache:
        try:
            return datasets.load_dataset(
                builder, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True
            )
        except Exception as e:  # a corrupt file: the builder's own message, on one line
            raise RowFormatError(f"{path}: not a readable {builder} file ({' '.join(str(e).split())})") from None


def _load_saved(path: Path, split: str | None) -> Any:
    import datasets

    data = datasets.load_from_disk(str(path), keep_in_memory=True)
    if isinstance(data, datasets.DatasetDict):
        name = split or "test"
        if name not in data:
            raise RowFormatError(f"{path}: no split {name!r} in the saved dataset; it has {sorted(data)}")
        return data[name]
    return data
