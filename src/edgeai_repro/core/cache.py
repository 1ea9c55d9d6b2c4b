"""Every content-addressed store of the project, declared in one table.

A cache holds what is expensive to recompute and shared between cells: finished cells, trained
devices, the global MoE's pretrained stand-in, teacher targets, vocabulary maps, tokenizers, the
incentive game's exact references. Each is a `Cache`: a name (its folder under `paths.cache`), a
version, and the code that fills it. An entry's key is the hash of the typed inputs it depends on
plus the cache's version, so bumping a version recomputes every entry of that cache, and a cell's
own id includes the versions of the caches it reads (core/store.py), so a cached cell never
outlives the data it was computed from.

Forgetting a bump would serve stale numbers. `tests/test_caches.py` guards it: each cache records
the fingerprint of the code that fills it (the syntax tree of the named functions, without
comments or docstrings, so that formatting does not count), and the test fails when that code
changes while the recorded fingerprint does not, naming the cache to bump. It covers the functions
listed in `fills`, not everything they call: a change deeper down is the reviewer's to catch, and
the fill lists name the functions where a change of output would show.

The table names code as "module:qualname" strings and imports nothing, so core stays below the
papers; only the fingerprint test imports the named functions.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import hashlib
import importlib
import inspect
import logging
import os
import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgeai_repro.core import locks
from edgeai_repro.core.files import atomic_write, content_key

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cache:
    """One content-addressed store. `fills` names the code whose output it stores ("module:qualname");
    `fingerprint` is that code's recorded fingerprint (see the module docstring)."""

    name: str
    version: int
    fills: tuple[str, ...]
    fingerprint: str
    key_length: int = 16

    def key(self, inputs: dict[str, Any]) -> str:
        """The entry key of `inputs` (a dict of JSON-able typed inputs) at this cache's version."""
        return content_key({**inputs, "version": self.version}, self.key_length)

    def folder(self, root: str | Path) -> Path:
        return Path(root) / self.name

    def path(self, root: str | Path, inputs: dict[str, Any], suffix: str = "") -> Path:
        return self.folder(root) / f"{self.key(inputs)}{suffix}"

    def read(self, path: Path, load: Callable[[Path], T]) -> T | None:
        """The entry at `path` loaded by `load`, or None when absent; a damaged entry is set aside
        (renamed `*.corrupt-<time>`, kept for inspection) and None returned, so it is recomputed."""
        if not path.exists():
            return None
        try:
            return load(path)
        except Exception:
            path.rename(path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"))
            return None

    def write(self, path: Path, save: Callable[[Path], None]) -> None:
        """Write a file entry atomically (readers never see half a file)."""
        atomic_write(path, save)

    def write_folder(self, path: Path, fill: Callable[[Path], None]) -> bool:
        """Fill a folder entry in a staging folder and rename it into place; when another process
        finished the same entry first, keep theirs, whatever the interleaving. Returns whether this
        call's entry was kept.

        A folder cannot be renamed onto a non-empty folder: the rename fails (ENOTEMPTY or EEXIST)
        exactly when another process published the entry between any check and the rename, so that
        error, with the entry in place, means "theirs is kept" rather than a failure. Readers never
        see a partial entry: it appears whole, by one rename, or not at all."""
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        try:
            fill(staging)
            try:
                os.rename(staging, path)
                return True
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR) or not path.is_dir():
                    raise
            shutil.rmtree(staging, ignore_errors=True)
            return False
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def lock(self, *paths: Path, **kwargs) -> contextlib.AbstractContextManager:
        """The locks of these entries (core/locks.py): hold them while computing the entries, after
        reading them once more (another process may have finished them while this one waited)."""
        return locks.holding(list(paths), **kwargs)

    def load_or_make(
        self,
        path: Path,
        load: Callable[[Path], T],
        make: Callable[[], Any],
        save: Callable[[Path, Any], None],
    ) -> T:
        """The entry at `path`, computed at most once across processes: read it; else take its lock,
        read it again (a process that held the lock has finished it), and only then `make` it,
        `save(path, made)` it and read it back."""
        value = self.read(path, load)
        if value is not None:
            return value
        with self.lock(path) as (held,):
            value = self.read(path, load)
            if value is not None:
                log.info(
                    "%s %s: computed by another process meanwhile (waited %.1f s)",
                    self.name,
                    path.name,
                    held.waited_s,
                )
                return value
            save(path, make())
        return load(path)


def _cache(name: str, version: int, fills: Iterable[str], fingerprint: str, key_length: int = 16) -> Cache:
    return Cache(name, version, tuple(fills), fingerprint, key_length)


# The one table. A task's cells are the cache "cells/<task>"; the others are the stores the tasks
# read. Bump `version` when the output of the code in `fills` changes (and record the fingerprint
# the test prints); the history of each bump is in the git log of this file.
CACHES: dict[str, Cache] = {
    c.name: c
    for c in (
        # aeria v3: approaches = service model x pricing rule, the EIP's demand split, profiles, c by argument;
        # revenue v4: revenue / F2 over one benchmark per market (the best service model's F2), f2_zero_markets
        # (run_revenue re-recorded with its body moved to _revenue_records, shared with the frontier: same output)
        _cache("cells/aeria_revenue", 4, ["edgeai_repro.aeria.tasks:run_revenue"], "222cdb39e536"),
        # properties v4: envy_users_checked and the first counterexample of each property
        _cache("cells/aeria_properties", 4, ["edgeai_repro.aeria.tasks:run_properties"], "4ce8bccbc1d7"),
        _cache("cells/aeria_runtime", 3, ["edgeai_repro.aeria.tasks:run_runtime"], "2924adac8049"),
        # worst_case v4: stratified grid offsets, whale profiles across c * n, one_one_eps, searched profiles
        _cache("cells/aeria_worst_case", 4, ["edgeai_repro.aeria.tasks:run_worst_case"], "0402368f058d"),
        # frontier v1: revenue / F2 on the markets beside the worst case, per consensus base
        _cache(
            "cells/aeria_frontier",
            1,
            ["edgeai_repro.aeria.tasks:run_frontier", "edgeai_repro.aeria.worst_case:search"],
            "003487b15177",
        ),
        # comm v2, memory v4, fusion v4: each result says what it was computed from (`inputs`: the paper's
        # models and data or not), which decides whether the paper's numbers are printed beside it
        _cache("cells/deepfusion_comm", 2, ["edgeai_repro.deepfusion.tasks:run_comm"], "62c30f2e7bb3"),
        # memory v3: the training step simulated on the meta device; loss path, checkpointing, attention, upcasts
        _cache("cells/deepfusion_memory", 4, ["edgeai_repro.deepfusion.tasks:run_memory"], "913532515aa7"),
        # phase1 v2: the per-type domains' chance purity and the best purity the partition allows
        # phase1 v3, fusion v7: real data (local, hub) split by question, so no question sits on two sides
        # (data/corpus.py); synthetic cells compute what they did, but their ids cannot tell them apart
        _cache("cells/deepfusion_phase1", 3, ["edgeai_repro.deepfusion.tasks:run_phase1"], "d61ed8bead59"),
        # fusion v2: fair baselines (FedJETS rounds, FedMKT's budget and traffic, OFA-KD's projector);
        # v3: each domain's student and VAA seeded apart (results independent of the teacher-targets cache)
        # v5: labelled public data about other entities (no hidden answers), option accuracy, the
        # knowledge-loss diagnostic (devices, merged MoE before/after Phase III); v6: the server selects on
        # validation records about entities of their own, FedJETS' rounds on records its devices hold out
        _cache("cells/deepfusion_fusion", 7, ["edgeai_repro.deepfusion.tasks:run_fusion"], "573a2f347723"),
        # incentive v2: references on the evaluation episodes' own workers; v3: best response stops when a
        # sweep gains < tol/100, MADDPG logs its losses once per logging interval
        # v4: judged on the game of the last iteration, per-LMO gaps, exploitability, exact update counts
        # (issue 38 options: their defaults compute what v5 did, outside the cell ids: no bump)
        _cache(
            "cells/incentive_asosa",
            5,
            ["edgeai_repro.incentive.asosa:run", "edgeai_repro.incentive.asosa:judged"],
            "ebc52efd1a01",
        ),
        # devices v6: context-first truncation (the question and answer are never cut); the grouped
        # training (devices/batched.py) stores the same devices up to float summation order: no bump;
        # deepfusion.attention on paper-scale loads (sdpa): the same function up to float order, and
        # tiny devices load as before: no bump
        _cache(
            "deepfusion/devices",
            6,
            [
                "edgeai_repro.deepfusion.devices.federation:train_device",
                "edgeai_repro.deepfusion.devices.federation:train_group",
                "edgeai_repro.deepfusion.devices.federation:_store",
                "edgeai_repro.deepfusion.devices.federation:base_model",
            ],
            "ba6fce96e732",
        ),
        # inits v2: context-first truncation; computed under the entry's lock (load_or_make): same output, no bump
        _cache(
            "deepfusion/inits",
            2,
            [
                "edgeai_repro.deepfusion.server.methods.base:Server.init_moe",
                "edgeai_repro.deepfusion.server.methods.base:tune",
            ],
            "c7368260ccfd",
        ),
        _cache(
            "deepfusion/targets",
            1,
            [
                "edgeai_repro.deepfusion.server.distill:add_teacher",
                "edgeai_repro.deepfusion.server.clustering:proxy",
            ],
            "eeea14066ae2",
        ),
        _cache(
            "deepfusion/vocab_maps",
            1,
            [
                "edgeai_repro.deepfusion.server.align:_vocab_map",
                "edgeai_repro.deepfusion.server.align:med_map",
            ],
            "1310098e71de",
        ),
        _cache(
            "deepfusion/tokenizers",
            1,
            ["edgeai_repro.deepfusion.data.tokenizers:train_tokenizer"],
            "6b76433eca3b",
        ),
        # references v2: iterated best response's stopping rule; v3: the game played (per-round Nash
        # path on the realised episodes, open-loop best responses when workers remember, welfare over paths);
        # v4 (and cells/incentive_asosa v5): best responses descend from each LMO's best start only
        _cache(
            "incentive/references",
            4,
            [
                "edgeai_repro.incentive.references:compute",
                "edgeai_repro.incentive.references:stage_nash_path",
                "edgeai_repro.incentive.references:welfare_optimum",
                "edgeai_repro.incentive.references:best_responses",
                "edgeai_repro.incentive.game:nash",
                "edgeai_repro.incentive.game:best_response",
            ],
            "3d31071439c0",
            20,
        ),
    )
}


def get(name: str) -> Cache:
    return CACHES[name]


def versions(names: Iterable[str]) -> dict[str, int]:
    """The versions of the named caches (what a cell's id includes for the caches it reads)."""
    return {n: CACHES[n].version for n in sorted(names)}


def _resolve(target: str) -> Any:
    module, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def code_fingerprint(targets: Iterable[str]) -> str:
    """A hash of the named functions' syntax trees (comments, docstrings and layout excluded)."""
    parts = []
    for target in targets:
        source = textwrap.dedent(inspect.getsource(_resolve(target)))
        tree = _without_docstrings(ast.parse(source))
        parts.append(ast.dump(tree, annotate_fields=False, include_attributes=False))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
