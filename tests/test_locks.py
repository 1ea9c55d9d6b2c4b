"""Cells that share a cache entry never fail and never compute it twice (core/locks.py, core/cache.py)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import pytest

from edgeai_repro.core import cache, locks
from edgeai_repro.core.errors import ConfigError

ENTRY = cache.Cache("stress", 1, (), "")
FILES = 3  # files per folder entry


def _fill_entry(staging: Path, key: str, rng: random.Random) -> None:
    for i in range(FILES):
        time.sleep(rng.uniform(0, 0.004))  # random delays inside the fill: the rename lands anywhere
        (staging / f"part{i}").write_text(f"{key}:{i}")


def _load_entry(folder: Path) -> str:
    parts = [(folder / f"part{i}").read_text() for i in range(FILES)]
    key = parts[0].split(":")[0]
    if parts != [f"{key}:{i}" for i in range(FILES)]:
        raise AssertionError(f"incomplete entry {folder}: {parts}")
    return key


def _worker(root: str, rounds: int, keys: int, use_locks: bool, seed: int, out: str) -> None:
    """One process: every round, every key in random order, read it or compute it; each
    computation appends one line to the log (O_APPEND: whole lines from every process)."""
    rng = random.Random(seed)
    seen = 0
    for r in range(rounds):
        order = list(range(keys))
        rng.shuffle(order)
        for k in order:
            key = f"r{r}k{k}"
            path = Path(root) / key

            def make(key: str = key) -> str:
                with open(out, "a") as log:
                    log.write(f"{key} {os.getpid()}\n")
                return key

            def save(p: Path, key: str) -> None:
                ENTRY.write_folder(p, lambda staging: _fill_entry(staging, key, rng))

            if use_locks:
                got = ENTRY.load_or_make(path, _load_entry, make, save)
            else:  # locks unreliable: every process computes, the first finished copy is kept
                got = ENTRY.read(path, _load_entry)
                if got is None:
                    save(path, make())
                    got = _load_entry(path)
            assert got == key
            seen += 1
    assert seen == rounds * keys


def _stress(
    tmp_path: Path, use_locks: bool, processes: int = 4, rounds: int = 15, keys: int = 4
) -> list[str]:
    ctx = mp.get_context("fork")
    log = tmp_path / "computed.log"
    log.touch()
    procs = [
        ctx.Process(target=_worker, args=(str(tmp_path / "store"), rounds, keys, use_locks, seed, str(log)))
        for seed in range(processes)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * processes  # no process failed or hung
    store = tmp_path / "store"
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == sorted(
        f"r{r}k{k}" for r in range(rounds) for k in range(keys)
    )
    for entry in store.iterdir():
        if not entry.name.startswith("."):
            assert _load_entry(entry) == entry.name  # every entry complete
    assert not [
        p for p in store.iterdir() if p.name.startswith(".") and p.name != ".locks"
    ]  # no staging left
    return [line.split()[0] for line in log.read_text().splitlines()]


def test_many_processes_filling_the_same_entries_never_fail_and_compute_each_once(tmp_path: Path) -> None:
    """4 processes x 15 rounds x 4 shared folder entries, random delays inside each fill: no failure,
    every reader sees a complete entry, each entry computed exactly once."""
    computed = _stress(tmp_path, use_locks=True)
    assert sorted(computed) == sorted(set(computed)) and len(computed) == 60


def test_without_locks_racing_writers_still_never_fail(tmp_path: Path) -> None:
    """The fallback where locks are unreliable: the same stress, every process computing what it does
    not see; the folder rename's "already there" error means the other copy is kept."""
    computed = _stress(tmp_path, use_locks=False)
    assert len(set(computed)) == 60 and len(computed) >= 60


def test_a_rename_onto_a_finished_entry_keeps_theirs(tmp_path: Path) -> None:
    """The interleaving of the reported failure: the entry appears between the check and the rename."""
    path = tmp_path / "entry"

    def fill(staging: Path) -> None:
        (staging / "mine").write_text("x")
        path.mkdir()
        (path / "theirs").write_text("y")  # another process finished first, during our fill

    assert ENTRY.write_folder(path, fill) is False
    assert [p.name for p in path.iterdir()] == ["theirs"] and [p.name for p in tmp_path.iterdir()] == [
        "entry"
    ]


def _hold_forever(entry: str, ready) -> None:
    lock = locks.EntryLock(Path(entry)).acquire()
    ready.set()
    time.sleep(600)
    lock.release()


def test_a_killed_holder_leaves_no_lock_that_blocks_the_next_run(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    entry = tmp_path / "entry"
    holder = ctx.Process(target=_hold_forever, args=(str(entry), ready))
    holder.start()
    assert ready.wait(30)
    with pytest.raises(locks.LockTimeoutError, match=rf"pid {holder.pid} on .*EDGEAI_LOCK_TIMEOUT_S"):
        locks.EntryLock(entry, timeout_s=0.3).acquire()  # a live holder: wait, then name it
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    start = time.monotonic()
    with locks.EntryLock(entry, timeout_s=5) as lock:  # its dead pid on this host: broken at once
        assert lock.broke and time.monotonic() - start < 2
    assert not locks.lock_path(entry).exists()


def test_a_lock_of_another_machine_is_stale_once_its_heartbeat_stops(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    path = locks.lock_path(entry)
    path.parent.mkdir()
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "since": 0}))
    with pytest.raises(locks.LockTimeoutError):  # fresh: its holder may be alive on that node
        locks.EntryLock(entry, timeout_s=0.2, stale_s=60).acquire()
    old = time.time() - 120
    os.utime(path, (old, old))  # no heartbeat for two minutes
    with locks.EntryLock(entry, timeout_s=1, stale_s=60) as lock:
        assert lock.broke


def test_the_holder_keeps_its_lock_fresh_while_it_computes(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    with locks.EntryLock(entry, heartbeat_s=0.05):
        old = time.time() - 100
        os.utime(locks.lock_path(entry), (old, old))
        time.sleep(0.3)
        assert time.time() - locks.lock_path(entry).stat().st_mtime < 5


def test_a_killed_writer_leaves_no_entry_a_reader_takes_for_finished(tmp_path: Path) -> None:
    path = tmp_path / "entry"

    def crash(staging: Path) -> None:
        (staging / "part0").write_text("entry:0")
        raise KeyboardInterrupt  # killed mid-fill

    with pytest.raises(KeyboardInterrupt):
        ENTRY.write_folder(path, crash)
    assert ENTRY.read(path, _load_entry) is None and list(tmp_path.iterdir()) == []


def test_an_unwritable_cell_store_is_refused_in_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError) as err:
        locks.check_writable(tmp_path / "a-file" / "cells", "paths.cache")
    message = str(err.value)
    assert "paths.cache=" in message and "a-file" in message and message.count(". ") == 0
    locks.check_writable(tmp_path / "new" / "cells", "paths.cache")  # a folder still to be made is fine


def test_breaking_a_stale_lock_leaves_no_file_behind(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    path = locks.lock_path(entry)
    path.parent.mkdir()
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "since": 0}))
    old = time.time() - 600
    os.utime(path, (old, old))
    with locks.EntryLock(entry, timeout_s=1, stale_s=60) as lock:
        assert lock.broke
    assert list(path.parent.iterdir()) == []
