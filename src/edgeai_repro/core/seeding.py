"""Seeding: every random draw of a cell flows from its swept seed.

numpy and torch are imported where they are used, not here: the launcher imports this module on
every launch, and a sweep whose cells are all cached never needs either."""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch global generators (for code we do not control)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on `device`, seeded deterministically."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
