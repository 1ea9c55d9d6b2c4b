"""Worst-case competitiveness: expected revenue / F2 of each pricing rule on fixed net-bid profiles.

A competitive ratio is a worst-case statement, "for every bid profile, E[revenue] >= F2 / beta",
with the expectation over the mechanism's own coins. So each profile is held fixed and the
pricing rule is replayed under `coin_draws` independent draws of its coins (the consensus grid's
u, the random halves); the minimum over profiles of E[revenue] / F2 is what the claim is judged on.
The profiles are the ones that stress prior-free auctions: the equal-revenue profile (every single
price earns the same, the classic worst case for sampling auctions), all-equal bids (ties), a
whale among equal bidders, two classes, and i.i.d. uniform and heavy-tailed draws.
"""

from __future__ import annotations

import torch

from edgeai_repro.aeria import pricing
from edgeai_repro.aeria.config import WorstProfile
from edgeai_repro.aeria.mechanisms import Auction, Noise, PricingRule

PROFILES = WorstProfile.values()


def profile(name: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """One net-bid profile of n bidders, (n,) float64."""
    i = torch.arange(1, n + 1, dtype=torch.float64)
    if name == "equal_revenue":
        return 1.0 / i
    if name == "equal":
        return torch.ones(n, dtype=torch.float64)
    if name == "whale":  # one bidder worth 4x what all the others together pay at price 1
        return torch.cat(
            [torch.tensor([4.0 * n], dtype=torch.float64), torch.ones(n - 1, dtype=torch.float64)]
        )
    if name == "two_class":  # a fifth of the bidders value the service 10x
        k = max(1, n // 5)
        return torch.cat(
            [torch.full((k,), 10.0, dtype=torch.float64), torch.ones(n - k, dtype=torch.float64)]
        )
    if name == "uniform":
        return torch.rand(n, generator=gen, dtype=torch.float64)
    if name == "pareto":  # tail index 1.5: a few bidders dominate
        return (1 - torch.rand(n, generator=gen, dtype=torch.float64)).pow(-1 / 1.5)
    raise ValueError(f"unknown profile {name!r}; use one of {PROFILES}")


def expected_ratio(rule: PricingRule, s: torch.Tensor, draws: int, gen: torch.Generator) -> float:
    """E over the rule's coins of its revenue on profile s, over F2(s)."""
    n = s.shape[-1]
    bids = s.expand(draws, n)
    noise = Noise(
        torch.rand((draws, 1), generator=gen, dtype=torch.float64),
        torch.rand((draws, n), generator=gen) < 0.5,
    )
    valid = bids > 0
    prior = bids if rule.needs_prior else None  # a prior that knows the profile exactly
    _, premium = rule.price(
        Auction(bids, valid, torch.zeros_like(bids), torch.ones_like(valid), noise, prior)
    )
    f2 = float(pricing.optimal_revenue(s, min_winners=2))
    return float(premium.sum(-1).mean()) / f2 if f2 > 0 else float("nan")
