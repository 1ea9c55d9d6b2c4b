"""One cell per GPU: how many cells a GPU launch runs at once, and which GPU each cell takes.

A launch on GPUs (`trainer=gpu`) runs as many cells at once as there are visible GPUs times
`trainer.cells_per_gpu` (1 unless the user asks for more): the `${cells_at_once:...}` resolver
gives the joblib launcher's n_jobs (every core on a CPU). Each cell's process then claims a GPU
slot by taking an exclusive lock on a file named after the GPU's UUID and the slot, held until the
process ends; so whatever the launcher (joblib workers, several launches on one node, SLURM tasks
that each see their GPU as cuda:0), two cells never share a GPU unless the user asked for it.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

_CLAIMED: int | None = None
_LOCKS: list[int] = []  # open lock files: held for the life of the process


def is_gpu(accelerator: object) -> bool:
    """Whether a trainer accelerator setting asks for a CUDA GPU."""
    return str(accelerator) in ("gpu", "cuda")


def joblib_width(n_jobs: int) -> int:
    """Cells a joblib launcher runs at once for its n_jobs (-1: every core, -2: all but one, ...)."""
    return max(1, (os.cpu_count() or 1) + 1 + n_jobs) if n_jobs < 0 else max(1, int(n_jobs))


def visible() -> int:
    """GPUs this process can see (0 without CUDA); NVML only, no CUDA context is created."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # a broken driver is "no GPU" here; the accelerator check says why
        return 0


def cells_at_once(accelerator: str, cells_per_gpu: int | str = 1) -> int:
    """The joblib launcher's n_jobs: every core (-1) on a CPU; on GPUs, the visible GPUs times
    `cells_per_gpu` (one cell per GPU by default; 1 when none is visible, e.g. planning on a CPU)."""
    if not is_gpu(accelerator):
        return -1
    return max(1, visible()) * max(1, int(cells_per_gpu))


def _uuid(index: int) -> str:
    import torch

    props = torch.cuda.get_device_properties(index)
    return str(getattr(props, "uuid", "") or f"index{index}").replace("/", "_")


def claim(cells_per_gpu: int = 1, folder: Path | None = None, wait_s: float = 1.0) -> int:
    """The GPU this process's cells run on: the first free (GPU, slot) lock, taken once per process
    and kept; waits while every slot is held (a launch never starts more cells than slots)."""
    import fcntl

    global _CLAIMED
    if _CLAIMED is not None:
        return _CLAIMED
    n = visible()
    if n == 0:
        raise RuntimeError("no CUDA GPU is visible to claim")
    folder = folder or Path(tempfile.gettempdir()) / f"edgeai-repro-gpus-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    names = [_uuid(i) for i in range(n)]
    while True:
        for slot in range(max(1, cells_per_gpu)):
            for index, name in enumerate(names):
                fd = os.open(folder / f"{name}-{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                _LOCKS.append(fd)
                _CLAIMED = index
                import torch

                torch.cuda.set_device(index)
                return index
        time.sleep(wait_s)


def current() -> int:
    """The GPU index this process claimed (0 before any claim)."""
    return _CLAIMED or 0


def host_ram_gb() -> float:
    """This machine's physical memory (GB)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def parallel_cells(cfg=None) -> int:
    """How many cells the running launch starts at once (1 outside a parallel launcher). `cfg`: the
    cell's config, for the `${cells_at_once:...}` default, which a job's Hydra config (holding only
    the `hydra` node) cannot resolve."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return 1
    launcher = HydraConfig.get().launcher
    n = OmegaConf.select(launcher, "n_jobs", default=None, throw_on_resolution_failure=False)
    if n is None and "cells_at_once" in str(OmegaConf.to_container(launcher).get("n_jobs", "")):
        trainer = cfg.get("trainer", {}) if cfg is not None else {}
        n = cells_at_once(trainer.get("accelerator", "cpu"), trainer.get("cells_per_gpu", 1) or 1)
    return 1 if n is None else joblib_width(n)
