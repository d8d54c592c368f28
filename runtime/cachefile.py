"""A JSON object on disk that later processes read back: the caches of measured choices
(``autotune``'s configurations, ``conv_choice``'s convolution algorithms).

Reading forgives a missing or damaged file (a cache only saves measuring again); writing
replaces the file atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any]:
    """The cached entries, or none when the file is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def store(path: Path, key: str, entry: object) -> OSError | None:
    """Add or replace ``key``; the error when the file cannot be written (the caller says
    what is lost: only the time to measure again)."""
    data = load(path)
    data[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        return exc
    return None
