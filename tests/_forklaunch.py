"""The launcher in a child of a fork server that has imported the heavy libraries once.

Each launch in the test suite used to start a fresh interpreter and import torch, Lightning
(which pulls torch._dynamo and torchmetrics), transformers, scikit-learn and matplotlib: about 6 s
of a 2-core machine before the first cell, paid some sixty times per suite. Here a multiprocessing
fork server (one per test worker) imports them once; each launch is a fork of it that runs
`python -m edgeai_repro` exactly as the command line does (`runpy`, its own working directory,
arguments, standard streams and exit status). The server never runs a torch operation, so no
thread pool exists when it forks. Launches that change the interpreter's start-up (PYTHONPATH or
another environment variable) still start a fresh interpreter (conftest.launch decides).
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

PRELOAD = [
    "torch",
    "lightning.pytorch",
    "transformers",
    "peft",
    "sklearn.cluster",
    "matplotlib.pyplot",
    "scipy.optimize",
    "pandas",
    "hydra",
    "omegaconf",
    "edgeai_repro.cli",
]

_context: multiprocessing.context.BaseContext | None = None


def _server() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(args: list[str], cwd: str, out: str, err: str) -> None:
    """Runs in the forked child: the launcher's `__main__`, its streams to two files."""
    os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's own stream
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.argv = [str(Path(sys.executable)), *args]
    try:
        runpy.run_module("edgeai_repro", run_name="__main__", alter_sys=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """`python -m edgeai_repro *args` in `cwd`, as subprocess.run(capture_output=True, text=True)."""
    command = [sys.executable, "-m", "edgeai_repro", *args]
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        proc = _server().Process(target=_child, args=(list(args), str(cwd), out, err))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(command, timeout)
        read = [Path(p).read_text() if Path(p).exists() else "" for p in (out, err)]
        return subprocess.CompletedProcess(command, proc.exitcode, read[0], read[1])
