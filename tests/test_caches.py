"""Every content-addressed store is declared once (core/cache.py) and cannot silently go stale."""

from __future__ import annotations

import pytest

from edgeai_repro.core import cache, tasks
from edgeai_repro.core.store import cell_id_of


@pytest.mark.parametrize("name", sorted(cache.CACHES))
def test_the_code_that_fills_a_cache_matches_its_recorded_fingerprint(name: str) -> None:
    """Changing the code that fills a cache without bumping its version would serve stale entries.
    When this fails: if the change alters what the cache stores, bump its version in core/cache.py;
    in every case record the new fingerprint printed here."""
    entry = cache.CACHES[name]
    now = cache.code_fingerprint(entry.fills)
    assert now == entry.fingerprint, (
        f"the code that fills cache {name!r} ({', '.join(entry.fills)}) changed: fingerprint {now}, recorded "
        f"{entry.fingerprint} (version {entry.version}); bump its version if its output changes, then record {now}"
    )


def test_every_task_has_a_cell_cache_and_reads_only_declared_caches() -> None:
    from edgeai_repro.cli import load_papers

    load_papers()
    for name in tasks.names():
        task = tasks.get(name)
        assert f"cells/{name}" in cache.CACHES, f"task {name} has no cells/{name} entry in core/cache.py"
        assert set(task.reads) <= set(cache.CACHES), f"task {name} reads an undeclared cache"


def test_a_cell_id_changes_with_the_versions_of_the_caches_it_reads(monkeypatch) -> None:
    task = tasks.Task(
        name="aeria_revenue",
        paper="aeria",
        section="aeria",
        run_target="x:y",
        validate_target="x:y",
        reads=("incentive/references",),
    )
    before = cell_id_of(task, {"a": 1}, 0)
    bumped = cache.Cache("incentive/references", cache.CACHES["incentive/references"].version + 1, (), "")
    monkeypatch.setitem(cache.CACHES, "incentive/references", bumped)
    assert cell_id_of(task, {"a": 1}, 0) != before
    plain = tasks.Task(
        name="aeria_revenue", paper="aeria", section="aeria", run_target="x:y", validate_target="x:y"
    )
    assert cell_id_of(plain, {"a": 1}, 0) == cell_id_of(plain, {"a": 1}, 0)


def test_a_damaged_entry_is_set_aside_and_recomputed(tmp_path) -> None:
    store = cache.Cache("test/entries", 1, (), "")
    path = store.path(tmp_path, {"x": 1}, ".json")
    store.write(path, lambda p: p.write_text("{not json"))
    import json

    assert store.read(path, lambda p: json.loads(p.read_text())) is None
    assert not path.exists() and list(path.parent.glob("*.corrupt-*"))
    assert store.key({"x": 1}) != cache.Cache("test/entries", 2, (), "").key({"x": 1})
