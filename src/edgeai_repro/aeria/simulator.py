"""The auction simulator: a LightningModule that evaluates batches of random markets.

Each test batch is a set of market indices; the module draws those markets (seeded by the cell
seed and the batch index), runs every configured approach (service model x pricing rule) on the
same markets and randomness (common random numbers, so differences between approaches are not
sampling noise), and logs revenue, the EIP's lease income, welfare, users served, edge
utilisation, revenue / F2 and run time per market. With `coin_draws` > 1 every market is replayed
under that many independent draws of the mechanisms' coins, and each market's figures are the
means over them: the expected revenue of a randomised mechanism on that fixed profile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgeai_repro.aeria import pricing
from edgeai_repro.aeria.config import AeriaConf
from edgeai_repro.aeria.market import (
    Market,
    Service,
    choose_service,
    prior_values,
    repeat_markets,
    sample_markets,
    service_options,
)
from edgeai_repro.aeria.mechanisms import Approach, Auction, Noise, PricingRule, approaches, draw_noise
from edgeai_repro.core.seeding import derive_seed, generator

METRICS = (
    "revenue",
    "eip_revenue",
    "welfare",
    "served",
    "utilisation",
    "f2",
    "benchmark_f2",
    "revenue_over_f2",
    "pricing_efficiency",
    "f2_zero",
    "runtime_ms",
)


@dataclass
class Outcome:
    service: Service
    value: torch.Tensor
    bid: torch.Tensor
    s: torch.Tensor
    wins: torch.Tensor
    premium: torch.Tensor

    def payment(self) -> torch.Tensor:
        return torch.where(self.wins, self.service.cost + self.premium, torch.zeros_like(self.premium))

    def utility(self) -> torch.Tensor:
        return torch.where(self.wins, self.value - self.payment(), torch.zeros_like(self.premium))


def user_values(market: Market, service: Service, cfg) -> torch.Tensor:
    """Private values; optionally scaled by the accuracy the chosen exit achieves."""
    if not cfg.market.valuation.accuracy_weighted:
        return market.value
    best = torch.tensor(
        [max(cfg.exit_accuracy[w]) for w in market.workloads],
        dtype=market.value.dtype,
        device=market.value.device,
    ).view(1, -1, 1)
    return market.value * service.accuracy / best


def prior_net(market: Market, service: Service, cfg, gen: torch.Generator) -> torch.Tensor:
    """Net values the provider's prior predicts for its admitted users, flattened per auction."""
    v = prior_values(market, cfg, int(cfg.posted_samples), gen)
    s = (v - service.cost.unsqueeze(-1)).clamp_min(0) * service.admitted.unsqueeze(-1)
    return s.flatten(-2)


def run_rule(
    rule: PricingRule,
    market: Market,
    noise: Noise,
    cfg,
    service: Service,
    bids: torch.Tensor | None = None,
    prior: torch.Tensor | None = None,
) -> Outcome:
    """Price one batch of markets on a given service; bids default to the true values."""
    value = user_values(market, service, cfg)
    bid = value if bids is None else bids
    s = bid - service.cost
    valid = service.admitted & (s > 0)
    s = torch.where(valid, s, torch.zeros_like(s))
    wins, premium = rule.price(Auction(s, valid, service.cost, service.admitted, noise, prior))
    return Outcome(service, value, bid, s, wins, premium)


def service_f2(market: Market, service: Service, cfg) -> torch.Tensor:
    """F2 per market (B,): the optimal single-price revenue with at least two winners, summed over
    the providers' auctions, of the true net values of the users a service model admits."""
    value = user_values(market, service, cfg)
    true_net = torch.where(service.admitted, (value - service.cost).clamp_min(0), torch.zeros_like(value))
    return pricing.optimal_revenue(true_net, min_winners=2).sum(dim=1)


def market_metrics(out: Outcome, market: Market, cfg, benchmark: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-market metrics, shape (B,). `revenue_over_f2` is the approach's net revenue over one
    benchmark per market, the same for every approach: the F2 of the best service model in that
    market (so ratios compare systems like for like); `pricing_efficiency` is over the F2 of the
    approach's own service model (how much of what its service offers its pricing extracts).
    Markets whose benchmark is 0 have no ratio; `f2_zero` counts them (never dropped silently)."""
    m = cfg.market
    premium = out.premium.sum(dim=(1, 2))
    lease = torch.where(out.wins, out.service.cost, torch.zeros_like(out.premium)).sum(dim=(1, 2))
    revenue = premium if cfg.revenue == "net" else premium + lease
    own = service_f2(market, out.service, cfg)
    welfare = torch.where(out.wins, out.value - out.service.cost, torch.zeros_like(out.value)).sum(dim=(1, 2))
    users = m.providers * m.users_per_provider
    used = torch.where(out.wins, out.service.edge_flops_s, torch.zeros_like(out.value)).sum(dim=(1, 2))
    nan = torch.full_like(own, float("nan"))
    return {
        "revenue": revenue,
        "eip_revenue": lease,
        "welfare": welfare,
        "served": out.wins.sum(dim=(1, 2)).to(revenue.dtype) / users,
        "utilisation": used / market.capacity_flops,
        "f2": own,
        "benchmark_f2": benchmark,
        "revenue_over_f2": torch.where(benchmark > 0, premium / benchmark.clamp_min(1e-300), nan),
        "pricing_efficiency": torch.where(own > 0, premium / own.clamp_min(1e-300), nan),
        "f2_zero": (benchmark <= 0).to(revenue.dtype),
    }


class AuctionSimulator(L.LightningModule):
    """Evaluates `cfg.markets` random markets per cell, in batches, for every approach."""

    def __init__(self, cfg: AeriaConf, seed: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.approaches: list[Approach] = approaches(self.cfg)
        self.rows: list[dict] = []

    def dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(torch.arange(self.cfg.markets)), batch_size=self.cfg.markets_per_batch
        )

    def test_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        (idx,) = batch
        draws = int(self.cfg.coin_draws)
        gen = generator(derive_seed("aeria-market", self.seed, batch_idx), self.device)
        market = sample_markets(self.cfg, len(idx), gen, self.device)
        if draws > 1:
            market = repeat_markets(market, draws)
        noise = draw_noise(market.shape, self.cfg.consensus_scope, gen, self.device)
        options = service_options(market, self.cfg)  # computed once, masked per service model
        services: dict[str, Service] = {
            name: choose_service(market, self.cfg, name, options)
            for name in dict.fromkeys(a.service for a in self.approaches)
        }
        # One benchmark per market for every approach: the F2 of the best service model there.
        benchmark = torch.stack([service_f2(market, s, self.cfg) for s in services.values()]).amax(0)
        priors: dict[str, torch.Tensor] = {}
        for ap in self.approaches:
            start = time.perf_counter()
            if ap.rule.needs_prior and ap.service not in priors:
                prior_gen = generator(
                    derive_seed("aeria-prior", self.seed, batch_idx, ap.service), self.device
                )
                priors[ap.service] = prior_net(market, services[ap.service], self.cfg, prior_gen)
            out = run_rule(
                ap.rule, market, noise, self.cfg, services[ap.service], prior=priors.get(ap.service)
            )
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed_ms = (time.perf_counter() - start) * 1e3 / len(idx)
            metrics = {
                k: v.view(len(idx), draws).mean(1).tolist()
                for k, v in market_metrics(out, market, self.cfg, benchmark).items()
            }
            markets = idx.tolist()
            for b, market_id in enumerate(markets):
                self.rows.append(
                    {
                        "method": ap.name,
                        "market": market_id,
                        **{k: v[b] for k, v in metrics.items()},
                        "runtime_ms": elapsed_ms,
                    }
                )

    def on_test_epoch_end(self) -> None:
        """The cell's per-approach means, logged once to its loggers (CSV, W&B). Lightning's per-step
        `self.log` of every (approach, metric) pair cost more than the auctions themselves."""
        import math

        means: dict[str, float] = {}
        for row in self.rows:
            for k, v in row.items():
                if k not in ("method", "market") and not math.isnan(v):
                    key = f"{row['method']}/{k}"
                    total, count = means.get(key, (0.0, 0))
                    means[key] = (total + v, count + 1)
        metrics = {k: total / count for k, (total, count) in means.items()}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=0)
