"""Worst-case competitiveness: expected revenue / F2 of each pricing rule on fixed net-bid profiles,
and on profiles searched to be as bad as possible for each rule.

A competitive ratio is a worst-case statement, "for every bid profile, E[revenue] >= F2 / beta",
with the expectation over the mechanism's own coins. So each profile is held fixed and the
pricing rule is replayed under `coin_draws` draws of its coins (the consensus grid's u,
stratified over [0, 1) so that its expectation is all but exact; the random halves); the minimum
over profiles of E[revenue] / F2 is what the claim is judged on.

The fixed profiles are the ones that stress prior-free auctions, and those that reach each CORE
estimate's weak spot:
- equal_revenue (every single price earns the same: the classic worst case of sampling auctions),
  equal (ties), two_class (a fifth worth 10x), uniform and pareto (i.i.d. draws);
- whale_<m>n: one bidder worth m * n among n - 1 bidders worth 1. Removing the whale drops every
  other bidder's estimate F(s_-i) from m * n to about n, so once m * n exceeds c * n the estimates
  cannot agree and a small bidder is offered a share of the whale's value: CORE with the F estimate
  earns about 1/n of F2 there, for every base c. m = 2, 4, 8, 32 lies on both sides of c * n for
  every base of the consensus_base grid;
- one_one_eps: [1, 1, eps, ...]: F2 = 2 comes from two bidders, and removing either leaves the
  others' F2 at about eps * n: CORE with the F2 estimate earns about eps of F2.
- searched: a profile searched per rule to minimise its expected revenue / F2 (`search`).
"""

from __future__ import annotations

import math

import torch

from edgeai_repro.aeria import pricing
from edgeai_repro.aeria.config import WorstProfile
from edgeai_repro.aeria.mechanisms import Auction, Noise, PricingRule

PROFILES = WorstProfile.values()
FIXED = [p for p in PROFILES if p != "searched"]
EPS = 1e-3  # the small bids of one_one_eps


def profile(name: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """One net-bid profile of n bidders, (n,) float64."""
    i = torch.arange(1, n + 1, dtype=torch.float64)
    ones = torch.ones(n, dtype=torch.float64)
    if name == "equal_revenue":
        return 1.0 / i
    if name == "equal":
        return ones
    if name.startswith("whale_"):
        return torch.cat([torch.tensor([float(name[6:-1]) * n], dtype=torch.float64), ones[1:]])
    if name == "one_one_eps":
        return torch.cat([ones[:2], torch.full((n - 2,), EPS, dtype=torch.float64)])[:n]
    if name == "two_class":  # a fifth of the bidders value the service 10x
        k = max(1, n // 5)
        return torch.cat([torch.full((k,), 10.0, dtype=torch.float64), ones[k:]])
    if name == "uniform":
        return torch.rand(n, generator=gen, dtype=torch.float64)
    if name == "pareto":  # tail index 1.5: a few bidders dominate
        return (1 - torch.rand(n, generator=gen, dtype=torch.float64)).pow(-1 / 1.5)
    raise ValueError(f"unknown fixed profile {name!r}; use one of {FIXED}")


def draw_coins(n: int, draws: int, gen: torch.Generator) -> Noise:
    """`draws` draws of a rule's coins for n bidders: the grid offsets u stratified (one in each of
    `draws` equal slices of [0, 1)), the halves' coins fair and independent."""
    u = (
        torch.arange(draws, dtype=torch.float64) + torch.rand(draws, generator=gen, dtype=torch.float64)
    ) / draws
    return Noise(u.unsqueeze(-1), torch.rand((draws, n), generator=gen) < 0.5)


def expected_ratios(rule: PricingRule, s: torch.Tensor, coins: Noise) -> torch.Tensor:
    """E over `coins` of the rule's revenue on each profile of s (B, n), over its F2: (B,). Every
    profile sees the same coins (common random numbers: their differences are not coin noise)."""
    b, n = s.shape
    draws = coins.u.shape[0]
    bids = s.unsqueeze(1).expand(b, draws, n).reshape(b * draws, n)
    noise = Noise(coins.u.repeat(b, 1), coins.coin.repeat(b, 1))
    valid = bids > 0
    prior = bids if rule.needs_prior else None  # a prior that knows the profile exactly
    _, premium = rule.price(
        Auction(bids, valid, torch.zeros_like(bids), torch.ones_like(valid), noise, prior)
    )
    revenue = premium.sum(-1).reshape(b, draws).mean(-1)
    f2 = pricing.optimal_revenue(s, min_winners=2)
    return torch.where(f2 > 0, revenue / f2.clamp_min(1e-300), torch.full_like(f2, math.nan))


def expected_ratio(rule: PricingRule, s: torch.Tensor, draws: int, gen: torch.Generator) -> float:
    """E over the rule's coins of its revenue on profile s, over F2(s)."""
    return float(expected_ratios(rule, s.unsqueeze(0), draw_coins(s.shape[-1], draws, gen))[0])


def search(
    rule: PricingRule,
    n: int,
    gen: torch.Generator,
    iters: int = 60,
    batch: int = 16,
    draws: int = 128,
) -> torch.Tensor:
    """A profile of n positive bids on which `rule` earns little of F2: a local search in log-bid
    space from the worst of the fixed profiles and one random profile, on one set of common coins.

    Each step proposes `batch` changes of the current profile (one or two bids moved by a Gaussian
    step whose size shrinks from 2 to 0.05 in log units, or one bid made a whale of up to 64x the top)
    and keeps the best if it lowers the ratio. The ratio the search saw is biased low (it chose the
    profile on these coins); its caller scores the result on fresh coins."""
    coins = draw_coins(n, draws, gen)
    starts = [profile(p, n, gen) for p in FIXED] + [torch.rand(n, generator=gen, dtype=torch.float64) + 1e-3]
    start = torch.stack(starts)
    ratios = expected_ratios(rule, start, coins).nan_to_num(math.inf)
    x = start[int(ratios.argmin())].clamp_min(1e-9).log()
    best = float(ratios.min())
    for t in range(iters):
        step = 2.0 * (0.025 ** (t / max(1, iters - 1)))
        cand = x.expand(batch, n).clone()
        rows = torch.arange(batch)
        for _ in range(2):
            cols = torch.randint(0, n, (batch,), generator=gen)
            move = torch.randn(batch, generator=gen, dtype=torch.float64) * step
            cand[rows, cols] += move * (torch.rand(batch, generator=gen) < 0.75)
        whale = torch.rand(batch, generator=gen) < 0.2
        cols = torch.randint(0, n, (batch,), generator=gen)
        lift = cand.amax(-1) + torch.rand(batch, generator=gen, dtype=torch.float64) * math.log(64.0)
        cand[rows[whale], cols[whale]] = lift[whale]
        r = expected_ratios(rule, cand.clamp(-30, 30).exp(), coins).nan_to_num(math.inf)
        if float(r.min()) < best:
            best, x = float(r.min()), cand[int(r.argmin())]
    return x.clamp(-30, 30).exp()


def describe(s: torch.Tensor, top: int = 4) -> str:
    """A profile in a few words: its size and its largest bids relative to the median."""
    sd = s.sort(descending=True).values
    med = float(sd.median())
    head = ", ".join(f"{float(v) / med:.3g}" for v in sd[:top])
    return f"n={len(s)}; top bids / median: {head}{', ...' if len(s) > top else ''}"
