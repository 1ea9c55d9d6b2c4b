"""Pricing rules behind one interface; each is a class that a Hydra config option instantiates.

An *approach* (a whole system) is a service model (market.ServiceModel: how each user's DNN is
partitioned and which exit it uses) paired with a pricing rule. A pricing rule sees net bids
s = bid - serving cost (0 for users that cannot take part), the users' serving costs, which users
the capacity rule admitted, and pre-drawn randomness. Drawing the randomness outside lets the
property checks replay one realisation under many misreports, which is how universal truthfulness
(truthful for every coin flip) is tested.

Adding a pricing rule is one class here (or anywhere importable) and one YAML in
conf/aeria/pricing/ whose `_target_` names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from edgeai_repro.aeria import pricing


@dataclass(frozen=True)
class Noise:
    u: torch.Tensor  # (..., 1) grid offset in [0, 1), one per auction (or per market)
    coin: torch.Tensor  # (..., n) fair coins for random-sampling mechanisms

    def expand(self, reps: int) -> Noise:
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
    s: torch.Tensor  # (..., n) net bids, 0 where invalid
    valid: torch.Tensor  # (..., n) bool: feasible, admitted, positive net bid
    cost: torch.Tensor  # (..., n) serving cost
    admitted: torch.Tensor  # (..., n) bool: feasible and admitted by the (bid-independent) capacity rule
    noise: Noise
    prior: torch.Tensor | None = (
        None  # (..., n*K) net values drawn from the provider's prior (posted pricing)
    )


def _finish(a: Auction, wins: torch.Tensor, premium: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    wins = wins & a.valid
    return wins, torch.where(wins, premium, torch.zeros_like(premium))


def _single_price(a: Auction, price: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    price = price.expand_as(a.s)
    return _finish(a, a.s >= price, price)


def _halves(a: Auction) -> tuple[torch.Tensor, torch.Tensor]:
    side = a.noise.coin
    return torch.where(side, a.s, 0.0), torch.where(~side, a.s, 0.0)


ESTIMATES = {"f": 1, "f2": 2}


def consensus_targets(
    s: torch.Tensor,
    u: torch.Tensor,
    c: float,
    estimate: str = "f",
    presorted: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Each bidder's revenue target: F (or F2) of the others' bids, rounded down to the random grid."""
    return pricing.consensus_round(pricing.leave_one_out_revenue(s, ESTIMATES[estimate], presorted), u, c)


class PricingRule:
    """Turns one batch of auctions into (wins, premium over serving cost; 0 for losers)."""

    truthful: ClassVar[bool] = True  # what the rule is designed to be (checked, not assumed)
    consensus_base: ClassVar[bool] = False  # prices come from a consensus estimate (has a base c)
    needs_prior: ClassVar[bool] = False  # reads samples of the provider's prior (Auction.prior)

    def price(self, a: Auction) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


@dataclass
class Core(PricingRule):
    """AERIA's pricing (CORE): each bidder's target is F of the OTHER net bids (`estimate: f`; or
    their F2, `f2`) rounded down to the random grid c^(j+u), extracted by equal cost sharing; no
    offer reads the bidder's own bid."""

    c: float = 5.357  # the worst-case-optimal base; conf/aeria/pricing sets each rule's
    estimate: str = "f"
    consensus_base: ClassVar[bool] = True

    def price(self, a: Auction) -> tuple[torch.Tensor, torch.Tensor]:
        price = pricing.core_prices(a.s, a.noise.u, self.c, ESTIMATES[self.estimate])
        wins = (a.s >= price) & (price > 0)  # a target of 0 (no other bid) sells nothing
        return _finish(a, wins, price)


@dataclass
class CoreGlobal(PricingRule):
    """Variant: one estimate r(F(s)) from all bids. Envy-free always, truthful only under consensus."""

    c: float = 5.357  # the worst-case-optimal base; conf/aeria/pricing sets each rule's
    truthful: ClassVar[bool] = False
    consensus_base: ClassVar[bool] = True

    def price(self, a: Auction) -> tuple[torch.Tensor, torch.Tensor]:
        target = pricing.consensus_round(pricing.optimal_revenue(a.s), a.noise.u[..., 0], self.c)
        return _finish(a, *pricing.cost_share_winners(a.s, target.unsqueeze(-1).expand_as(a.s)))


class OptimalF(PricingRule):
    """Oracle: the revenue-optimal single price on the true bids (earns F; not truthful)."""

    truthful: ClassVar[bool] = False

    def price(self, a: Auction) -> tuple[torch.Tensor, torch.Tensor]:
        return _single_price(a, pricing.optimal_price(a.s).unsqueeze(-1))


class OptimalF2(PricingRule):
    """Oracle with at least two winners (earns F2, the benchmark of competitive analysis)."""

    truthful: ClassVar[bool] = False

    def price(self, a: Auction) -> tuple[torch.Tensor, torch.Tensor]:
        sd, _ = pricing.sort_desc(a.s)
        n = a.s.shape[-1]
        rev = torch.arange(1, n + 1, dtype=a.s.dtype, device=a.s.device) * sd
        if n >= 2:
            rev[..., 0] = -1.0
        price = sd.gather(-1, rev.argmax(-1, keepdim=True))
        price = torch.where(price > 0, price, torch.full_like(price, float("inf")))
        return _single_price(a, price)


class Dop(PricingRule):
    """Deterministic optimal price: each bidder is offered the optimal price of the others (ties to
    the lowest such price)."""

    def price(self, a: Auction) -> tuple[torch.Tensor, torch.Tensor]:
        return _single_price(a, pricing.leave_one_out_price(a.s))


class Rsop(PricingRule):
    """Random sampling optimal price: each half is offered the other half's optimal price."""

    def price(self, a: Auction) -> tuple[torch.Tensor, torch.Tensor]:
        s_a, s_b = _halves(a)
        price = torch.where(
            a.noise.coin, pricing.optimal_price(s_b).unsqueeze(-1), pricing.optimal_price(s_a).unsqueeze(-1)
        )
        return _single_price(a, price)


class Rspe(PricingRule):
    """Random sampling profit extraction: extract F(other half) from each half by cost sharing."""

    def price(self, a: Auction) -> tuple[torch.Tensor, torch.Tensor]:
        s_a, s_b = _halves(a)
        f_a = pricing.optimal_revenue(s_a).unsqueeze(-1).expand_as(a.s)
        f_b = pricing.optimal_revenue(s_b).unsqueeze(-1).expand_as(a.s)
        win_a, price_a = pricing.cost_share_winners(s_a, f_b)
        win_b, price_b = pricing.cost_share_winners(s_b, f_a)
        side = a.noise.coin
        return _finish(a, torch.where(side, win_a, win_b), torch.where(side, price_a, price_b))


@dataclass
class KPlusOne(PricingRule):
    """Limited supply: the k highest net bids win and pay the (k+1)-th; k from admitted users only."""

    fraction: float = 0.5

    def price(self, a: Auction) -> tuple[torch.Tensor, torch.Tensor]:
        n = a.s.shape[-1]
        k = (a.admitted.sum(-1, keepdim=True).to(a.s.dtype) * self.fraction).floor().clamp(1, n).long()
        sd, order = pricing.sort_desc(a.s, stable=True)  # ties rank by position: the earlier bidder wins
        padded = torch.cat([sd, torch.zeros_like(sd[..., :1])], dim=-1)
        price = padded.gather(-1, k)
        rank = torch.empty_like(order).scatter_(
            -1, order, torch.arange(n, device=a.s.device).expand_as(order)
        )
        wins = (rank < k) & (a.s > price)
        return _finish(a, wins, price.expand_as(a.s))


class Posted(PricingRule):
    """Posted premium set from the provider's prior, never from the bids: the premium that
    maximises expected revenue on samples of its users' net values drawn from the value law
    (given each user's public class and serving cost). The strongest posted price a provider that
    knows the distribution could set (Myerson's monopoly price for a known prior)."""

    needs_prior: ClassVar[bool] = True

    def price(self, a: Auction) -> tuple[torch.Tensor, torch.Tensor]:
        if a.prior is None:
            raise ValueError("posted pricing needs the provider's prior samples (Auction.prior)")
        return _single_price(a, pricing.optimal_price(a.prior).unsqueeze(-1))


@dataclass(frozen=True)
class Approach:
    """A whole system: a service model and a pricing rule, named `<service>+<pricing>`."""

    service: str
    pricing: str
    rule: PricingRule

    @property
    def name(self) -> str:
        return f"{self.service}+{self.pricing}"


AERIA = "auto+core"  # the paper's approach: per-user joint partition and exit, CORE pricing


def build_rules(pricing_cfg) -> dict[str, PricingRule]:
    """Instantiate every configured pricing rule (`aeria.pricing.<name>` holds its `_target_`)."""
    from hydra.utils import instantiate

    rules = {}
    for name, node in pricing_cfg.items():
        rule = instantiate(node) if not isinstance(node, PricingRule) else node
        if not isinstance(rule, PricingRule):
            raise TypeError(f"aeria.pricing.{name} builds a {type(rule).__name__}, not a PricingRule")
        rules[name] = rule
    return rules


def approaches(cfg) -> list[Approach]:
    """The matrix of configured service models x pricing rules, in configuration order."""
    rules = build_rules(cfg.pricing)
    return [Approach(service, name, rule) for service in cfg.services for name, rule in rules.items()]
