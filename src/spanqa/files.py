"""The JSON files runs and commands leave behind, written atomically: a reader (a relaunched sweep deciding what is
finished, `make compare`, a user) never sees half a file, whatever kills the writer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    """numpy scalars → Python numbers (json cannot write them)."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, blob: Any, indent: int | None = 1) -> Path:
    """Write to a temporary sibling, then rename over `path` (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(blob, indent=indent, ensure_ascii=False, default=_plain), encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
