"""Every mechanism on small auctions: truthfulness by brute-force misreports, IR, envy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeai_repro.aeria.config import MechanismConf
from edgeai_repro.aeria.mechanisms import REGISTRY, Auction, Noise

PRICING = {name: m for name, m in REGISTRY.items() if m.partition == "auto"}


def _auction(s: np.ndarray, u: float, coin: np.ndarray) -> Auction:
    st = torch.tensor(s, dtype=torch.float64)[None]
    noise = Noise(u=torch.tensor([[u]], dtype=torch.float64), coin=torch.tensor(coin)[None])
    return Auction(st, st > 0, torch.full_like(st, 0.5), torch.ones_like(st, dtype=torch.bool), noise)


def _utility(name: str, s: np.ndarray, i: int, u: float, coin: np.ndarray, value: float) -> float:
    wins, premium = PRICING[name].price(_auction(s, u, coin), MechanismConf())
    return float(value - premium[0, i]) if bool(wins[0, i]) else 0.0


@pytest.mark.parametrize("name", [n for n, m in PRICING.items() if m.truthful])
def test_designed_truthful_mechanisms_admit_no_profitable_misreport(name: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        n = int(rng.integers(2, 12))
        s = rng.uniform(0.1, 10, size=n)
        u, coin = float(rng.uniform()), rng.uniform(size=n) < 0.5
        i = int(rng.integers(n))
        truthful = _utility(name, s, i, u, coin, s[i])
        for factor in [0.0, 0.3, 0.8, 0.99, 1.01, 1.5, 3.0, 10.0]:
            lie = s.copy()
            lie[i] = s[i] * factor
            assert _utility(name, lie, i, u, coin, s[i]) <= truthful + 1e-9, (name, s, i, factor)


def test_the_oracle_is_not_truthful() -> None:
    # The high bidder sets the price (10 > 2 x 3); bidding 4 makes 3 the optimal price.
    s = np.array([10.0, 3.0])
    coin = np.zeros(2, dtype=bool)
    truthful = _utility("optimal_f", s, 0, 0.5, coin, 10.0)
    lie = s.copy()
    lie[0] = 4.0
    assert _utility("optimal_f", lie, 0, 0.5, coin, 10.0) > truthful


@pytest.mark.parametrize("name", list(PRICING))
def test_individual_rationality(name: str) -> None:
    rng = np.random.default_rng(4)
    for _ in range(30):
        s = rng.uniform(0, 5, size=int(rng.integers(1, 20)))
        a = _auction(s, float(rng.uniform()), rng.uniform(size=len(s)) < 0.5)
        wins, premium = PRICING[name].price(a, MechanismConf())
        assert torch.all(premium[wins] <= a.s[wins] + 1e-12)
        assert torch.all(premium[~wins] == 0)


def test_global_estimate_is_envy_free_on_every_draw() -> None:
    rng = np.random.default_rng(5)
    for _ in range(100):
        s = rng.uniform(0, 5, size=int(rng.integers(2, 25)))
        wins, premium = PRICING["aeria_global"].price(_auction(s, float(rng.uniform()), np.zeros(len(s), bool)),
                                                      MechanismConf())
        if wins.any():
            p = premium[wins]
            assert torch.allclose(p, p[0].expand_as(p))            # one premium for all winners
            assert torch.all(torch.tensor(s)[~wins[0]] < p[0] + 1e-12)  # losers cannot afford it


def test_aeria_extracts_the_common_target_under_consensus() -> None:
    s = np.full(50, 1.0)  # F = 50 and every F(s_-i) = 49: one grid cell for most u
    a = _auction(s, 0.5, np.zeros(50, bool))
    wins, premium = PRICING["aeria"].price(a, MechanismConf(c=2.0))
    target = 2.0 ** (np.floor(np.log2(49.0) - 0.5) + 0.5)
    assert float(premium.sum()) == pytest.approx(target)
