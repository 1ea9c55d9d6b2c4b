"""What made a result: the git commit (and whether the tree had uncommitted changes), the hash of
the committed environment lock, and the exact versions of the packages that decide the numbers.

Recorded in every cell's result.json and in each table's run.json, never part of a cell's identity:
a result stays reusable across a lock refresh, and the report says when the cells of one table were
computed under different versions (`version_sets`)."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

# The packages whose versions can move a table's numbers (model code, optimisers, solvers).
PACKAGES = ("torch", "transformers", "peft", "lightning", "hydra-core", "numpy", "scipy")
LOCK_FILE = "requirements.lock"


def repo_root() -> Path:
    """The checkout this package was installed from (editable install; the lock lies there)."""
    return Path(__file__).resolve().parents[3]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def versions() -> dict[str, str | None]:
    """python and each of PACKAGES as installed now (None where one is missing)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """{commit, dirty, lock, versions}: commit is None outside a git checkout; lock is the sha256 of
    requirements.lock (None when the package was installed without its checkout). Computed once per
    process: a cell records the code it ran with, even if the tree changes while it runs."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    lock = repo_root() / LOCK_FILE
    return {
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "lock": hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None,
        "versions": versions(),
    }


def short(record: dict | None) -> str:
    """`abc1234` (`abc1234+dirty` with uncommitted changes; `unknown` outside a checkout)."""
    commit = (record or {}).get("commit")
    if not commit:
        return "unknown"
    return commit[:7] + ("+dirty" if record.get("dirty") else "")


def version_sets(records: list[dict | None]) -> list[dict]:
    """The distinct (versions, lock) combinations among cells' records, each with how many cells ran
    under it, most cells first; cells without a record (computed before it existed) are one entry
    with versions None."""
    counts: dict[str, dict] = {}
    for rec in records:
        key_obj = {"versions": (rec or {}).get("versions"), "lock": (rec or {}).get("lock")}
        key = repr(sorted((key_obj["versions"] or {}).items())) + str(key_obj["lock"])
        counts.setdefault(key, {**key_obj, "cells": 0})["cells"] += 1
    return sorted(counts.values(), key=lambda entry: -entry["cells"])


def differing(sets: list[dict]) -> str | None:
    """One sentence naming the packages whose versions differ between the cells of one table, or None
    when they all ran under the same versions."""
    if len(sets) < 2:
        return None
    known = [s["versions"] for s in sets if s["versions"]]
    names = sorted({k for v in known for k in v if len({str(w.get(k)) for w in known}) > 1})
    unknown = sum(s["cells"] for s in sets if not s["versions"])
    parts = []
    if names:
        parts.append("; ".join(f"{n} " + ", ".join(sorted({str(v.get(n)) for v in known})) for n in names))
    if unknown:
        parts.append(f"{unknown} cells computed before versions were recorded")
    if not parts:
        parts.append("the same package versions under different locks")
    return (
        f"The cells of this table were computed under {len(sets)} environments ({'; '.join(parts)}); "
        "run.json lists them (force=true recomputes every cell under the current one)."
    )
