"""The auction simulator: a LightningModule that evaluates batches of random markets.

Each test batch is a set of market indices; the module draws those markets (seeded by the cell
seed and the batch index), runs every configured mechanism on the same markets and randomness
(common random numbers, so differences between mechanisms are not sampling noise), and logs
revenue, welfare, users served, edge utilisation, revenue / F2 and run time per market.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from edgeai_repro.aeria import pricing
from edgeai_repro.aeria.market import Market, Service, choose_service, sample_markets, service_options
from edgeai_repro.aeria.mechanisms import REGISTRY, Auction, Noise, draw_noise
from edgeai_repro.core.seeding import derive_seed, generator

METRICS = ("revenue", "welfare", "served", "utilisation", "f2", "revenue_over_f2", "runtime_ms")


def plain(cfg):
    """The aeria config as a typed dataclass: attribute access in hot loops without OmegaConf cost."""
    return OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg


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
    best = torch.tensor([max(cfg.exit_accuracy[w]) for w in market.workloads], dtype=market.value.dtype,
                        device=market.value.device).view(1, -1, 1)
    return market.value * service.accuracy / best


def run_mechanism(name: str, market: Market, noise: Noise, cfg, bids: torch.Tensor | None = None,
                  service: Service | None = None) -> Outcome:
    """Serve one batch of markets with mechanism `name`; bids default to the true values."""
    mech = REGISTRY[name]
    service = service if service is not None else choose_service(market, cfg, mech.partition)
    value = user_values(market, service, cfg)
    bid = value if bids is None else bids
    s = bid - service.cost
    valid = service.admitted & (s > 0)
    s = torch.where(valid, s, torch.zeros_like(s))
    wins, premium = mech.price(Auction(s, valid, service.cost, service.admitted, noise), cfg.mechanism)
    return Outcome(service, value, bid, s, wins, premium)


def market_metrics(out: Outcome, market: Market, cfg) -> dict[str, torch.Tensor]:
    """Per-market metrics, shape (B,). F2 is over the true net values of the admitted users."""
    m = cfg.market
    premium = out.premium.sum(dim=(1, 2))
    lease = torch.where(out.wins, out.service.cost, torch.zeros_like(out.premium)).sum(dim=(1, 2))
    revenue = premium if cfg.mechanism.revenue == "net" else premium + lease
    true_net = torch.where(out.service.admitted, (out.value - out.service.cost).clamp_min(0), torch.zeros_like(out.value))
    f2 = pricing.optimal_revenue(true_net, min_winners=2).sum(dim=1)
    welfare = torch.where(out.wins, out.value - out.service.cost, torch.zeros_like(out.value)).sum(dim=(1, 2))
    users = m.providers * m.users_per_provider
    used = torch.where(out.wins, out.service.edge_flops_s, torch.zeros_like(out.value)).sum(dim=(1, 2))
    return {
        "revenue": revenue,
        "welfare": welfare,
        "served": out.wins.sum(dim=(1, 2)).to(revenue.dtype) / users,
        "utilisation": used / market.capacity_flops,
        "f2": f2,
        "revenue_over_f2": torch.where(f2 > 0, premium / f2.clamp_min(1e-300), torch.full_like(f2, float("nan"))),
    }


class AuctionSimulator(L.LightningModule):
    """Evaluates `cfg.markets` random markets per cell, in batches, for every mechanism."""

    def __init__(self, cfg, seed: int) -> None:
        super().__init__()
        self.cfg = plain(cfg)
        self.seed = seed
        self.rows: list[dict] = []

    def dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.arange(self.cfg.markets)), batch_size=self.cfg.markets_per_batch)

    def test_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        (idx,) = batch
        gen = generator(derive_seed("aeria-market", self.seed, batch_idx), self.device)
        market = sample_markets(self.cfg, len(idx), gen, self.device)
        noise = draw_noise(market.shape, self.cfg.mechanism.consensus_scope, gen, self.device)
        options = service_options(market, self.cfg)  # computed once, masked per partition mode
        services: dict[str, Service] = {}
        for name in self.cfg.mechanisms:
            start = time.perf_counter()
            partition = REGISTRY[name].partition
            if partition not in services:
                services[partition] = choose_service(market, self.cfg, partition, options)
            out = run_mechanism(name, market, noise, self.cfg, service=services[partition])
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed_ms = (time.perf_counter() - start) * 1e3 / len(idx)
            metrics = market_metrics(out, market, self.cfg)
            for b in range(len(idx)):
                self.rows.append({"method": name, "market": int(idx[b]),
                                  **{k: float(v[b]) for k, v in metrics.items()}, "runtime_ms": elapsed_ms})
            self.log_dict({f"{name}/{k}": v.float().nanmean() for k, v in metrics.items()},
                          batch_size=len(idx), on_epoch=True)
            self.log(f"{name}/runtime_ms", elapsed_ms, batch_size=len(idx), on_epoch=True)
