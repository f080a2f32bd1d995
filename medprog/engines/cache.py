"""On-disk cache of completions, keyed on the full request.

One JSON file per request under a directory the user chooses (default: the user cache
dir), created owner-only (0700) because requests contain patient text.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import platformdirs


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDPROG_CACHE_DIR") or platformdirs.user_cache_dir("medprog")) / "requests"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by the owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def request_key(request: dict[str, Any]) -> str:
    blob = json.dumps(request, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class RequestCache:
    """``get``/``put`` completions by request key; ``RequestCache(None)`` is a disabled cache."""

    def __init__(self, directory: Path | str | None) -> None:
        self.directory = private_dir(Path(directory)) if directory else None

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.directory is None:
            return None
        path = self._path(key)
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.directory is None:
            return
        path = self._path(key)
        private_dir(path.parent)
        # a file of its own per writer (mkstemp: unique name, mode 0600): threads of one process
        # may put the same key at once (identical requests in flight)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, ensure_ascii=False)
        os.replace(tmp, path)
