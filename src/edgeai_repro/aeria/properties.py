"""Empirical checks of truthfulness, envy-freeness and individual rationality.

Truthfulness is tested per realisation of the mechanism's randomness: a sampled user re-bids
g x value for every g of a grid while everyone else and every coin stay fixed; a violation is a
misreport that strictly raises the user's utility. Envy is defined on the premium (payment above
one's own serving cost), because services differ across users: user i envies winner j when
i's true net value minus j's premium exceeds i's utility. IR: no winner pays more than its bid.
"""
from __future__ import annotations

import torch

from edgeai_repro.aeria.market import Market, choose_service, replicate
from edgeai_repro.aeria.mechanisms import CONSENSUS_PRICING, REGISTRY, Noise, consensus_targets
from edgeai_repro.aeria.simulator import Outcome, run_mechanism


def _tol(x: torch.Tensor) -> float:
    return 1e-9 * max(float(x.abs().max()), 1.0)


def envious(out: Outcome) -> torch.Tensor:
    """Per auction (markets x providers): admitted users strictly better off with some winner's premium."""
    inf = torch.full_like(out.premium, float("inf"))
    min_premium = torch.where(out.wins, out.premium, inf).amin(dim=-1, keepdim=True)
    own_net = out.value - out.service.cost
    envy = out.service.admitted & torch.isfinite(min_premium) & (own_net - min_premium > out.utility() + _tol(out.value))
    return envy.sum(-1)


def ir_violations(out: Outcome) -> int:
    return int((out.wins & (out.payment() > out.bid + _tol(out.bid))).sum())


def truthfulness_violations(name: str, market: Market, noise: Noise, cfg, truthful: Outcome,
                            users: torch.Tensor, grid: torch.Tensor) -> int:
    """Count checked users with a strictly profitable misreport. `users`: (K, 3) indices (b, m, i)."""
    count, g = 0, len(grid)
    for b, m, i in users.tolist():
        bids = truthful.value[b:b + 1].expand(g, -1, -1).clone()
        bids[:, m, i] = grid * truthful.value[b, m, i]
        out = run_mechanism(name, replicate(market, b, g), Noise(noise.u[b:b + 1], noise.coin[b:b + 1]).expand(g),
                            cfg, bids=bids, service=replicate(truthful.service, b, g))
        if float(out.utility()[:, m, i].max()) > float(truthful.utility()[b, m, i]) + _tol(truthful.value):
            count += 1
    return count


def consensus(out: Outcome, noise: Noise, c: float) -> torch.Tensor:
    """Per auction: True when every bidder's rounded revenue estimate is the same value."""
    targets = consensus_targets(out.s, noise.u, c)
    valid = out.s > 0
    big = torch.full_like(targets, float("inf"))
    return torch.where(valid, targets, -big).amax(-1) <= torch.where(valid, targets, big).amin(-1)


def check_market(name: str, market: Market, noise: Noise, cfg, gen: torch.Generator) -> dict[str, float]:
    """All three checks for one mechanism on one batch of markets."""
    service = choose_service(market, cfg, REGISTRY[name].partition)
    truthful = run_mechanism(name, market, noise, cfg, service=service)
    b, m, n = market.shape
    candidates = service.admitted.nonzero()
    k = min(int(cfg.users_checked) * b, len(candidates))
    pick = candidates[torch.randperm(len(candidates), generator=gen, device=candidates.device)[:k]]
    grid = torch.tensor(list(cfg.misreport_grid), dtype=market.value.dtype, device=market.value.device)
    envy = envious(truthful)
    result = {
        "truthfulness_violations": float(truthfulness_violations(name, market, noise, cfg, truthful, pick, grid)),
        "users_checked": float(k),
        "envy_violations": float(envy.sum()),
        "ir_violations": float(ir_violations(truthful)),
        "winners": float(truthful.wins.sum()),
        "consensus_rate": float("nan"),
        "envy_in_consensus_auctions": float("nan"),
    }
    if REGISTRY[name].price in CONSENSUS_PRICING:
        agreed = consensus(truthful, noise, cfg.mechanism.c)
        result["consensus_rate"] = float(agreed.double().mean())
        result["envy_in_consensus_auctions"] = float(envy[agreed].sum())
    return result
