"""A lock per cache entry, across processes and machines that share a filesystem.

Two cells that need the same entry (the devices of one (case, N, seed), a teacher's targets) would
otherwise both compute it, and one copy would be thrown away. The first to take the entry's lock
computes it; the others wait and then read it.

The lock is a file created with O_CREAT | O_EXCL next to the entry (`.locks/<entry>.lock`), which
is atomic on local filesystems and on NFS v3 and later (unlike flock/fcntl, which some network
filesystems do not honour). It holds who took it (host, pid, time) and its holder touches it every
`heartbeat_s` while it computes. A lock is stale, and is broken, when its holder is a dead process
on this host or its file has not been touched for `stale_s` (a holder killed on another machine).
Breaking renames the lock file to a unique name first, so two waiters cannot both break it and
both compute. Where even O_EXCL is unreliable (very old NFS), the cache stays correct: an entry
is published by one atomic rename and a second finished copy is discarded (core/cache.py); only the
saving of duplicated work is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from edgeai_repro.core.errors import ConfigError

HEARTBEAT_S = 10.0
STALE_S = 120.0  # 12 missed heartbeats: the holder is gone
# How long a waiter waits for a live holder before it gives up, naming it (paper-scale devices train
# for hours; EDGEAI_LOCK_TIMEOUT_S sets it, in seconds).
TIMEOUT_S = float(os.environ.get("EDGEAI_LOCK_TIMEOUT_S", 24 * 3600))


class LockTimeoutError(TimeoutError):
    """A live process held an entry's lock for longer than the waiter's timeout."""


def lock_path(entry: Path) -> Path:
    return entry.parent / ".locks" / f"{entry.name}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _holder(path: Path) -> dict | None:
    """Who holds the lock at `path` (None when it is gone); an unreadable file is someone writing it."""
    try:
        text = path.read_text()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        info = {}
    return {**info, "age_s": age}


def _stale(holder: dict, stale_s: float) -> bool:
    if holder["age_s"] > stale_s:
        return True
    return holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1)))


class EntryLock:
    """Exclusive right to compute one entry. Use as a context manager; `waited_s` says how long it
    waited for another process, `broke` whether it broke a stale lock on the way."""

    def __init__(
        self,
        entry: Path,
        timeout_s: float = TIMEOUT_S,
        heartbeat_s: float = HEARTBEAT_S,
        stale_s: float = STALE_S,
        poll_s: float = 0.05,
    ) -> None:
        self.entry, self.path = entry, lock_path(entry)
        self.timeout_s, self.heartbeat_s, self.stale_s, self.poll_s = timeout_s, heartbeat_s, stale_s, poll_s
        self.waited_s, self.broke = 0.0, False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._token = uuid.uuid4().hex

    def _try(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(
                {
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "since": time.time(),
                    "token": self._token,
                },
                f,
            )
        return True

    def acquire(self) -> EntryLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        start, delay = time.monotonic(), self.poll_s
        while not self._try():
            holder = _holder(self.path)
            if holder is not None and _stale(holder, self.stale_s):
                # rename first: of two waiters that both judged it stale, one rename succeeds
                aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.path, aside)
                    aside.unlink()  # ours alone now: nothing is left behind
                    self.broke = True
                continue
            if time.monotonic() - start > self.timeout_s:
                who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
                raise LockTimeoutError(
                    f"{self.entry} has been computed by {who} for longer than {self.timeout_s:.0f} s "
                    f"(its lock: {self.path}); wait for it, or if that process is gone delete the lock "
                    "(EDGEAI_LOCK_TIMEOUT_S sets the wait)."
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        self.waited_s = time.monotonic() - start
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name=f"lock {self.entry.name}")
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        # only our own lock: one broken as stale by a waiter is theirs now
        holder = _holder(self.path)
        if holder is not None and holder.get("token") == self._token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> EntryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def holding(entries: list[Path], **kwargs) -> Iterator[list[EntryLock]]:
    """The locks of several entries, taken in one global order (by path) so that two processes
    needing overlapping sets never wait for each other in a circle."""
    taken: list[EntryLock] = []
    try:
        for entry in sorted(entries, key=str):
            taken.append(EntryLock(entry, **kwargs).acquire())
        yield taken
    finally:
        for lock in reversed(taken):
            lock.release()


def check_writable(folder: Path, key: str) -> None:
    """Refuse, in one sentence naming the folder and the key that sets it, a store (and so lock)
    folder this process cannot create files in, before any cell runs."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not (probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)):
        raise ConfigError(
            f"{key}={folder} is not writable by this user ({probe} is "
            f"{'not a folder' if not probe.is_dir() else 'read-only'}; the cells and the locks of their "
            f"entries are written there); set {key} to a folder you can write, for example "
            f"{key}=/tmp/edgeai-cells."
        )
