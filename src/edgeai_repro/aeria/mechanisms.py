"""Pricing mechanisms behind one interface, and the registry that names them in config.

A mechanism sees net bids s = bid - serving cost (0 for users that cannot take part), the
users' serving costs, which users the capacity rule admitted, and pre-drawn randomness. Drawing the
randomness outside lets the property checks replay one realisation under many misreports, which is
how universal truthfulness (truthful for every coin flip) is tested.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from edgeai_repro.aeria import pricing


@dataclass(frozen=True)
class Noise:
    u: torch.Tensor     # (..., 1) grid offset in [0, 1), one per auction (or per market)
    coin: torch.Tensor  # (..., n) fair coins for random-sampling mechanisms

    def expand(self, reps: int) -> "Noise":
        """Repeat along a new leading axis, to replay one draw under `reps` bid profiles."""
        return Noise(self.u.expand(reps, *self.u.shape[1:]), self.coin.expand(reps, *self.coin.shape[1:]))


def draw_noise(shape: tuple[int, ...], scope: str, gen: torch.Generator, device: torch.device | str) -> Noise:
    """Randomness for auctions of shape (markets, providers, users)."""
    b, m, _ = shape
    u_shape = (b, m, 1) if scope == "provider" else (b, 1, 1)
    u = torch.rand(u_shape, generator=gen, device=device).expand(b, m, 1)
    coin = torch.rand(shape, generator=gen, device=device) < 0.5
    return Noise(u=u, coin=coin)


@dataclass(frozen=True)
class Auction:
    s: torch.Tensor         # (..., n) net bids, 0 where invalid
    valid: torch.Tensor     # (..., n) bool: feasible, admitted, positive net bid
    cost: torch.Tensor      # (..., n) serving cost
    admitted: torch.Tensor  # (..., n) bool: feasible and admitted by the (bid-independent) capacity rule
    noise: Noise


PriceFn = Callable[[Auction, "object"], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Mechanism:
    name: str
    price: PriceFn          # returns (wins, premium over serving cost; 0 for losers)
    partition: str = "auto"  # auto | edge_only | device_only | no_early_exit
    truthful: bool = True    # what the mechanism is designed to be (checked, not assumed)
    summary: str = ""


def _finish(a: Auction, wins: torch.Tensor, premium: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    wins = wins & a.valid
    return wins, torch.where(wins, premium, torch.zeros_like(premium))


def consensus_targets(s: torch.Tensor, u: torch.Tensor, c: float) -> torch.Tensor:
    """Each bidder's revenue target: F of the others' bids, rounded down to the random grid."""
    return pricing.consensus_round(pricing.leave_one_out_revenue(s), u, c)


def aeria(a: Auction, p) -> tuple[torch.Tensor, torch.Tensor]:
    """Consensus revenue estimate + equal cost sharing; each offer ignores the bidder's own bid."""
    return _finish(a, *pricing.cost_share_winners(a.s, consensus_targets(a.s, a.noise.u, p.c)))


def aeria_global(a: Auction, p) -> tuple[torch.Tensor, torch.Tensor]:
    """Variant: one estimate r(F(s)) from all bids. Envy-free always, truthful only under consensus."""
    target = pricing.consensus_round(pricing.optimal_revenue(a.s), a.noise.u[..., 0], p.c)
    target = target.unsqueeze(-1).expand_as(a.s)
    return _finish(a, *pricing.cost_share_winners(a.s, target))


def _single_price(a: Auction, price: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    price = price.expand_as(a.s)
    return _finish(a, a.s >= price, price)


def optimal_f(a: Auction, p) -> tuple[torch.Tensor, torch.Tensor]:
    """Oracle: the revenue-optimal single price on the true bids (earns F; not truthful)."""
    return _single_price(a, pricing.optimal_price(a.s).unsqueeze(-1))


def optimal_f2(a: Auction, p) -> tuple[torch.Tensor, torch.Tensor]:
    """Oracle with at least two winners (earns F2, the benchmark of competitive analysis)."""
    sd, _ = pricing.sort_desc(a.s)
    n = a.s.shape[-1]
    rev = torch.arange(1, n + 1, dtype=a.s.dtype, device=a.s.device) * sd
    if n >= 2:
        rev[..., 0] = -1.0
    price = sd.gather(-1, rev.argmax(-1, keepdim=True))
    price = torch.where(price > 0, price, torch.full_like(price, float("inf")))
    return _single_price(a, price)


def dop(a: Auction, p) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic optimal price: each bidder is offered the optimal price of the others."""
    return _single_price(a, pricing.leave_one_out_price(a.s))


def _halves(a: Auction) -> tuple[torch.Tensor, torch.Tensor]:
    side = a.noise.coin
    return torch.where(side, a.s, 0.0), torch.where(~side, a.s, 0.0)


def rsop(a: Auction, p) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sampling optimal price: each half is offered the other half's optimal price."""
    s_a, s_b = _halves(a)
    price = torch.where(a.noise.coin, pricing.optimal_price(s_b).unsqueeze(-1),
                        pricing.optimal_price(s_a).unsqueeze(-1))
    return _single_price(a, price)


def rspe(a: Auction, p) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sampling profit extraction: extract F(other half) from each half by cost sharing."""
    s_a, s_b = _halves(a)
    f_a = pricing.optimal_revenue(s_a).unsqueeze(-1).expand_as(a.s)
    f_b = pricing.optimal_revenue(s_b).unsqueeze(-1).expand_as(a.s)
    win_a, price_a = pricing.cost_share_winners(s_a, f_b)
    win_b, price_b = pricing.cost_share_winners(s_b, f_a)
    side = a.noise.coin
    return _finish(a, torch.where(side, win_a, win_b), torch.where(side, price_a, price_b))


def kplus1_price(a: Auction, p) -> tuple[torch.Tensor, torch.Tensor]:
    """Limited supply: the k highest net bids win and pay the (k+1)-th; k from admitted users only."""
    n = a.s.shape[-1]
    k = (a.admitted.sum(-1, keepdim=True).to(a.s.dtype) * p.kplus1_fraction).floor().clamp(1, n).long()
    sd, order = pricing.sort_desc(a.s)
    padded = torch.cat([sd, torch.zeros_like(sd[..., :1])], dim=-1)
    price = padded.gather(-1, k)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(n, device=a.s.device).expand_as(order))
    wins = (rank < k) & (a.s > price)
    return _finish(a, wins, price.expand_as(a.s))


def cost_plus(a: Auction, p) -> tuple[torch.Tensor, torch.Tensor]:
    """Posted price (1 + markup) x serving cost: premium = markup x cost, bid-independent."""
    premium = p.cost_plus_markup * a.cost
    return _finish(a, a.s >= premium, premium)


CONSENSUS_PRICING = (aeria, aeria_global)  # mechanisms whose prices come from a consensus estimate

REGISTRY: dict[str, Mechanism] = {
    m.name: m
    for m in [
        Mechanism("aeria", aeria, summary="AERIA: consensus estimate + cost sharing (ours, reconstructed)"),
        Mechanism("aeria_global", aeria_global, truthful=False,
                  summary="AERIA variant: estimate from all bids (envy-free, truthful w.h.p.)"),
        Mechanism("aeria_edge_only", aeria, partition="edge_only", summary="AERIA, whole DNN at the edge"),
        Mechanism("aeria_device_only", aeria, partition="device_only", summary="AERIA, whole DNN on the device"),
        Mechanism("aeria_no_early_exit", aeria, partition="no_early_exit", summary="AERIA, final exit only"),
        Mechanism("optimal_f", optimal_f, truthful=False, summary="optimal single price F (oracle)"),
        Mechanism("optimal_f2", optimal_f2, truthful=False, summary="optimal single price, >= 2 winners (F2 oracle)"),
        Mechanism("rsop", rsop, summary="random sampling optimal price"),
        Mechanism("rspe", rspe, summary="random sampling profit extraction"),
        Mechanism("dop", dop, summary="deterministic optimal price"),
        Mechanism("kplus1_price", kplus1_price, summary="(k+1)-th price uniform auction"),
        Mechanism("cost_plus", cost_plus, summary="cost-plus posted price"),
    ]
}
