"""Empirical checks of truthfulness, envy-freeness and individual rationality, for every approach.

Truthfulness is tested per realisation of the mechanism's randomness: a sampled user re-bids
g x value for every g of a grid while everyone else and every coin stay fixed; a violation is a
misreport that strictly raises the user's utility. On top of the random markets, every pricing
rule is checked exhaustively on all integer net-bid profiles in {0..4}^n, n <= 5, where ties are
everywhere (`integer_profile_violations`). Envy is defined on the premium (payment above one's own
serving cost), because services differ across users: user i envies winner j when i's true net
value minus j's premium exceeds i's utility. IR: no winner pays more than its bid.
"""

from __future__ import annotations

import itertools

import torch

from edgeai_repro.aeria.market import Market, choose_service, replicate
from edgeai_repro.aeria.mechanisms import Approach, Auction, Noise, PricingRule, consensus_targets
from edgeai_repro.aeria.simulator import Outcome, prior_net, run_rule


def _tol(x: torch.Tensor) -> float:
    return 1e-9 * max(float(x.abs().max()), 1.0)


def envious(out: Outcome) -> torch.Tensor:
    """Per auction (markets x providers): admitted users strictly better off with some winner's premium."""
    inf = torch.full_like(out.premium, float("inf"))
    min_premium = torch.where(out.wins, out.premium, inf).amin(dim=-1, keepdim=True)
    own_net = out.value - out.service.cost
    envy = (
        out.service.admitted
        & torch.isfinite(min_premium)
        & (own_net - min_premium > out.utility() + _tol(out.value))
    )
    return envy.sum(-1)


def ir_violations(out: Outcome) -> int:
    return int((out.wins & (out.payment() > out.bid + _tol(out.bid))).sum())


def truthfulness_violations(
    rule: PricingRule,
    market: Market,
    noise: Noise,
    cfg,
    truthful: Outcome,
    users: torch.Tensor,
    grid: torch.Tensor,
    prior: torch.Tensor | None,
) -> tuple[int, str | None]:
    """Checked users with a strictly profitable misreport, and the first one described.
    `users`: (K, 3) indices (b, m, i)."""
    count, g, first = 0, len(grid), None
    for b, m, i in users.tolist():
        bids = truthful.value[b : b + 1].expand(g, -1, -1).clone()
        bids[:, m, i] = grid * truthful.value[b, m, i]
        out = run_rule(
            rule,
            replicate(market, b, g),
            Noise(noise.u[b : b + 1], noise.coin[b : b + 1]).expand(g),
            cfg,
            service=replicate(truthful.service, b, g),
            bids=bids,
            prior=None if prior is None else prior[b : b + 1].expand(g, *prior.shape[1:]),
        )
        gained = out.utility()[:, m, i]
        if float(gained.max()) > float(truthful.utility()[b, m, i]) + _tol(truthful.value):
            count += 1
            if first is None:
                best = int(gained.argmax())
                first = (
                    f"market {b}, provider {m}, user {i}: value {float(truthful.value[b, m, i]):.4g}, bidding "
                    f"{float(grid[best]):g} x value raises its utility from {float(truthful.utility()[b, m, i]):.4g} "
                    f"to {float(gained[best]):.4g}"
                )
    return count, first


def consensus(out: Outcome, noise: Noise, c: float, estimate: str = "f") -> torch.Tensor:
    """Per auction: True when every bidder's rounded revenue estimate is the same value."""
    targets = consensus_targets(out.s, noise.u, c, estimate)
    valid = out.s > 0
    big = torch.full_like(targets, float("inf"))
    return torch.where(valid, targets, -big).amax(-1) <= torch.where(valid, targets, big).amin(-1)


def check_market(ap: Approach, market: Market, noise: Noise, cfg, gen: torch.Generator) -> dict[str, float]:
    """All three checks for one approach on one batch of markets."""
    service = choose_service(market, cfg, ap.service)
    prior = prior_net(market, service, cfg, gen) if ap.rule.needs_prior else None
    truthful = run_rule(ap.rule, market, noise, cfg, service, prior=prior)
    b, _m, _n = market.shape
    candidates = service.admitted.nonzero()
    k = min(int(cfg.users_checked) * b, len(candidates))
    pick = candidates[torch.randperm(len(candidates), generator=gen, device=candidates.device)[:k]]
    grid = torch.tensor(list(cfg.misreport_grid), dtype=market.value.dtype, device=market.value.device)
    envy = envious(truthful)
    lies, first_lie = truthfulness_violations(ap.rule, market, noise, cfg, truthful, pick, grid, prior)
    result = {
        "truthfulness_violations": float(lies),
        "users_checked": float(k),
        "envy_violations": float(envy.sum()),
        "envy_users_checked": float(truthful.service.admitted.sum()),
        "ir_violations": float(ir_violations(truthful)),
        "winners": float(truthful.wins.sum()),
        "consensus_rate": float("nan"),
        "envy_in_consensus_auctions": float("nan"),
    }
    if ap.rule.consensus_base:
        agreed = consensus(truthful, noise, ap.rule.c, getattr(ap.rule, "estimate", "f"))
        result["consensus_rate"] = float(agreed.double().mean())
        result["envy_in_consensus_auctions"] = float(envy[agreed].sum())
    first = {"truthfulness_violations": first_lie}
    if float(envy.sum()):
        b, m = (int(v) for v in envy.nonzero()[0])
        first["envy_violations"] = (
            f"market {b}, provider {m}: {int(envy[b, m])} admitted users would rather pay "
            "a winner's premium than take their own outcome"
        )
    return result, {k: v for k, v in first.items() if v}


def integer_profiles(n: int, top: int = 4) -> torch.Tensor:
    """Every net-bid profile in {0..top}^n, (top+1)^n rows."""
    return torch.tensor(list(itertools.product(range(top + 1), repeat=n)), dtype=torch.float64)


def integer_profile_violations(
    rule: PricingRule, n: int, gen: torch.Generator, top: int = 4, draws: int = 4
) -> tuple[int, int, str | None]:
    """(profitable misreports, (profile, bidder, draw) triples checked, the first misreport found) over all profiles in
    {0..top}^n: bidder i with true net value v_i re-bids every value in {0..top} and half-integers,
    everyone else and the coins fixed. Digital goods (no capacity limit), zero serving cost, and
    prior samples for posted pricing equal to the profile itself (a prior that knows the profile
    exactly: the posted price then still ignores the bidder's own report)."""
    profiles = integer_profiles(n, top)
    p = len(profiles)
    lies = torch.arange(0, 2 * top + 1, dtype=torch.float64) / 2  # 0, 0.5, ..., top
    # One batch per draw: the honest profiles, then for each bidder i every profile with i's bid replaced by each lie.
    variants = [profiles]
    for i in range(n):
        lied = profiles.repeat(len(lies), 1)
        lied[:, i] = lies.repeat_interleave(p)
        variants.append(lied)
    bids = torch.cat(variants)
    reps = bids.shape[0] // p
    valid = bids > 0
    owner = torch.arange(n).repeat_interleave(len(lies) * p)  # whose lie each lied row is
    bad, first = 0, None
    for _ in range(draws):
        u = torch.rand((p, 1), generator=gen, dtype=torch.float64)
        coin = torch.rand((p, n), generator=gen) < 0.5
        noise = Noise(u.repeat(reps, 1), coin.repeat(reps, 1))
        prior = profiles.repeat(reps, 1) if rule.needs_prior else None
        wins, premium = rule.price(
            Auction(
                torch.where(valid, bids, 0.0),
                valid,
                torch.zeros_like(bids),
                torch.ones_like(valid),
                noise,
                prior,
            )
        )
        value = profiles.repeat(reps, 1)
        utility = torch.where(wins, value - premium, torch.zeros_like(value))  # (reps * p, n)
        honest = utility[:p]  # (p, n)
        lied_u = (
            utility[p:].gather(1, owner.view(-1, 1)).view(n, len(lies), p)
        )  # bidder i's utility when i lies
        best = lied_u.amax(1).T  # (p, n)
        found = best > honest + 1e-9
        bad += int(found.sum())
        if first is None and bool(found.any()):
            row, bidder = (int(v) for v in found.nonzero()[0])
            lie = float(lies[lied_u[bidder, :, row].argmax()])
            first = (
                f"profile {profiles[row].tolist()}: bidder {bidder} (value {float(profiles[row, bidder]):g}) "
                f"bids {lie:g} and gains {float(best[row, bidder] - honest[row, bidder]):.3g}"
            )
    return bad, draws * n * p, first
