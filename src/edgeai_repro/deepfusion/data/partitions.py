"""How the pooled training records are dealt to the N devices."""

from __future__ import annotations

import numpy as np

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.deepfusion.data.records import Record


def partition(
    records: list[Record],
    n_devices: int,
    scheme: str,
    seed: int,
    size_sigma: float = 1.0,
    alpha: float = 0.1,
    min_size: int = 8,
) -> list[list[int]]:
    """Indices of each device's records. random_uneven: shuffled records cut into log-normal
    sizes (the paper's "randomly and unevenly"). dirichlet: each device draws sub-domain
    proportions from Dirichlet(alpha) and its records follow them (topic skew)."""
    rng = np.random.default_rng(derive_seed("partition", scheme, n_devices, seed))
    n = len(records)
    if n < n_devices * min_size:
        raise ConfigError(
            f"{n} records cannot give {n_devices} devices {min_size} each; raise "
            "deepfusion.data.train_samples or lower deepfusion.data.min_device_samples."
        )
    raw = rng.lognormal(0.0, size_sigma, n_devices)
    spare = n - n_devices * min_size
    sizes = min_size + np.floor(raw / raw.sum() * spare).astype(int)
    sizes[: n - sizes.sum()] += 1  # hand out the rounding remainder
    if scheme == "random_uneven":
        order = rng.permutation(n)
        cuts = np.cumsum(sizes)[:-1]
        return [list(map(int, part)) for part in np.split(order, cuts)]
    if scheme != "dirichlet":
        raise ConfigError(f"deepfusion.data.partition={scheme!r} is unknown; use random_uneven or dirichlet.")
    labels = [r.subdomain for r in records]
    names = sorted(set(labels))
    pools = {s: list(rng.permutation([i for i, lab in enumerate(labels) if lab == s])) for s in names}
    # Each device's wished-for mix is Dirichlet(alpha); Sinkhorn scaling then makes the wishes
    # fit both the device sizes (rows) and the records each sub-domain has (columns), so the
    # pools do not run dry for the last devices while the mixes keep their skew.
    demand = sizes[:, None] * (rng.dirichlet([alpha] * len(names), size=n_devices) + 1e-9)
    supply = np.array([len(pools[s]) for s in names], dtype=float)
    for _ in range(500):
        demand *= (supply / demand.sum(0))[None, :]
        demand *= (sizes / demand.sum(1))[:, None]
    out = []
    for size, wish in zip(sizes, demand):
        want = np.floor(wish).astype(int)
        want[np.argsort(wish - want)[::-1][: size - want.sum()]] += 1
        mine: list[int] = []
        for s, k in zip(names, want):
            take, pools[s] = pools[s][:k], pools[s][k:]
            mine += take
        while len(mine) < size:  # rounding left a pool short: top up from the fullest pool
            s = max(pools, key=lambda key: len(pools[key]))
            mine.append(pools[s].pop())
        out.append([int(i) for i in mine])
    return out


def dominant_subdomain(records: list[Record], idx: list[int]) -> str:
    labels = [records[i].subdomain for i in idx]
    return max(sorted(set(labels)), key=labels.count)
