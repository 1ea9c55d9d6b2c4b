"""Content keys and atomic writes: the two primitives every store of the project is built on."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def content_key(obj: Any, length: int = 16) -> str:
    """A stable hex key for JSON-able content (sorted keys; other objects by str): what the cell
    store and the DeepFusion and incentive caches file their entries under."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temp file in the same folder, then rename it onto `path`, so readers
    (cells running side by side) never see half a file; the temp file goes if `write` fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
