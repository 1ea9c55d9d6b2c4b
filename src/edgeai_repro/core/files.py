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


_FILE_KEYS: dict[tuple, str] = {}


def path_key(path: str | Path) -> str:
    """The identity of a file's or a folder's contents: sha256 over its bytes (a folder: over every
    file under it, by relative name), so a file edited in place gets a new key and an unchanged one
    keeps its key wherever it lies. Kept per process by (path, size, mtime)."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    stamp = (str(root.resolve()), *((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stamp not in _FILE_KEYS:
        h = hashlib.sha256()
        for p in files:
            h.update(str(p.relative_to(root) if root.is_dir() else p.name).encode() + b"\0")
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        _FILE_KEYS[stamp] = h.hexdigest()
    return _FILE_KEYS[stamp]
