"""Who the devices are: which on-device LLM type each of the N devices runs."""

from __future__ import annotations

import numpy as np

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.deepfusion.config import Assignment


def assign_models(n_devices: int, types: list[str], seed: int, mode: str = "balanced") -> list[str]:
    """Each device's model type. `random` draws each device independently (the paper's wording);
    `balanced` (our default) shuffles a round-robin list, so every type has at least N // #types
    devices and per-type clustering never finds a type with too few devices by bad luck."""
    if mode not in Assignment.values():
        raise ConfigError(
            f"deepfusion.assignment={mode!r} is unknown; use one of: {', '.join(Assignment.values())}."
        )
    if not types:
        raise ConfigError("deepfusion.device_models is empty; name at least one on-device model type.")
    rng = np.random.default_rng(derive_seed("assign", n_devices, tuple(types), seed))
    if mode == "random":
        return [types[i] for i in rng.integers(0, len(types), size=n_devices)]
    order = [types[i % len(types)] for i in range(n_devices)]
    return [order[i] for i in rng.permutation(n_devices)]
