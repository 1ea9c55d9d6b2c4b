"""Random edge-AI markets, the service models (how a user's DNN is partitioned and exited) and
the edge infrastructure provider's capacity allocation; none of these ever reads a bid.

A market has M providers (each selling one multi-exit DNN) with n users each, and one edge
infrastructure provider (EIP) that leases its capacity to the providers at a posted lease price.
The EIP splits capacity among providers in proportion to their declared demand (`demand`) or
equally (`equal`); both are bid-independent, which keeps the auctions truthful.
Shapes are (markets, providers, users).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import lru_cache

import torch

from edgeai_repro.aeria.config import WORKLOADS, MarketProfile, Service
from edgeai_repro.aeria.workloads import profile

SERVICES = Service.values()
PROFILES = MarketProfile.values()


@dataclass(frozen=True)
class Candidates:
    """Every (partition point, exit) pair of a workload, one column each, padded per provider.

    Columns are ordered by exit, then by partition point from the device-heaviest down, so that
    argmin over edge demand breaks ties toward the earlier exit and the later partition point.
    """

    dev_flops: torch.Tensor  # (M, C) FLOPs run on the device (input_scale 1)
    tx_bits: torch.Tensor  # (M, C) bits sent uplink
    edge_flops: torch.Tensor  # (M, C) FLOPs run at the edge
    accuracy: torch.Tensor  # (M, C)
    device_only: torch.Tensor  # (M, C) bool
    final_exit: torch.Tensor  # (M, C) bool
    edge_only: torch.Tensor  # (M, C) bool: partition point 0 (the raw input is sent)
    present: torch.Tensor  # (M, C) bool: False for padding


def _workload_columns(
    name: str, accuracy: tuple[float, ...], input_bits: int, feature_bits: int
) -> list[tuple]:
    prof = profile(name)
    prefix = [0.0]
    for f in prof.unit_flops:
        prefix.append(prefix[-1] + f)
    cols = []
    last = len(prof.exit_unit) - 1
    for e, (u, br) in enumerate(zip(prof.exit_unit, prof.branch_flops)):
        upto = u + 1  # units 0..u are needed for exit e
        for p in range(upto, -1, -1):  # p units on the device
            dev_only = p == upto
            tx = (
                0.0
                if dev_only
                else (input_bits * prof.input_elems if p == 0 else feature_bits * prof.unit_out_elems[p - 1])
            )
            dev = prefix[p] + (br if dev_only else 0.0)
            edge = 0.0 if dev_only else prefix[upto] - prefix[p] + br
            cols.append((dev, tx, edge, accuracy[e], dev_only, e == last, p == 0))
    return cols


@lru_cache(maxsize=32)
def _candidates(
    workloads: tuple[str, ...], accuracy: tuple[tuple[float, ...], ...], input_bits: int, feature_bits: int
) -> Candidates:
    per = [_workload_columns(w, acc, input_bits, feature_bits) for w, acc in zip(workloads, accuracy)]
    width = max(len(c) for c in per)
    pad = (0.0, 0.0, 0.0, 0.0, False, False, False)  # padding columns are masked out by `present`
    rows = [c + [pad] * (width - len(c)) for c in per]
    t = lambda i, dt: torch.tensor([[col[i] for col in r] for r in rows], dtype=dt)
    present = torch.tensor([[j < len(c) for j in range(width)] for c in per])
    return Candidates(
        t(0, torch.float64),
        t(1, torch.float64),
        t(2, torch.float64),
        t(3, torch.float64),
        t(4, torch.bool),
        t(5, torch.bool),
        t(6, torch.bool),
        present,
    )


def provider_workloads(market_cfg) -> tuple[str, ...]:
    m = market_cfg.providers
    if market_cfg.workload == "mixed":
        return tuple(WORKLOADS[i % len(WORKLOADS)] for i in range(m))
    return (market_cfg.workload,) * m


@dataclass
class Market:
    """One batch of random markets. Users' private values are `value`; bids equal values unless a
    caller replaces them (the property checks do)."""

    workloads: tuple[str, ...]
    device_flops: torch.Tensor  # (B, M, n) FLOP/s
    uplink_bps: torch.Tensor  # (B, M, n)
    deadline_s: torch.Tensor  # (B, M, n)
    acc_floor: torch.Tensor  # (B, M, n)
    input_scale: torch.Tensor  # (B, M, n)
    value: torch.Tensor  # (B, M, n)
    capacity_flops: float  # whole edge, FLOP/s
    value_scale: torch.Tensor | None = (
        None  # (B, M, n) public factor of each value (profile x reference cost)
    )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.value.shape)  # type: ignore[return-value]


def _uniform(lo_hi, shape, gen, device, scale: float = 1.0) -> torch.Tensor:
    lo, hi = float(lo_hi[0]) * scale, float(lo_hi[1]) * scale
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device, dtype=torch.float64)


def reference_cost(workload: str, market_cfg) -> float:
    """The unit of value: leasing enough edge FLOP/s to run the whole model in half the median
    deadline. It depends on the workload only, not on the swept link or capacity, so sweeping
    those changes costs and feasibility but never the users' values."""
    prof = profile(workload)
    half_deadline = sum(market_cfg.deadline_ms) / 2 / 1000 / 2
    return market_cfg.lease_price * (prof.total_flops / 1e9) / half_deadline * market_cfg.slot_s


def draw_law(vcfg, shape, gen, device) -> torch.Tensor:
    """Draws from the value law, in units of the workload's reference cost (mean `mean` for the
    normal, lognormal and Pareto laws; uniform on [low, high])."""
    dist = str(getattr(vcfg.dist, "value", vcfg.dist))
    if dist == "uniform":
        return _uniform([vcfg.low, vcfg.high], shape, gen, device)
    z = torch.randn(shape, generator=gen, device=device, dtype=torch.float64)
    if dist == "normal":
        return (vcfg.mean + vcfg.std * z).clamp_min(0.0)
    if dist == "lognormal":
        sigma2 = torch.log(torch.tensor(1 + (vcfg.std / vcfg.mean) ** 2, dtype=torch.float64))
        mu = torch.log(torch.tensor(vcfg.mean, dtype=torch.float64)) - sigma2 / 2
        return torch.exp(mu + sigma2.sqrt() * z)
    if dist == "pareto":
        alpha = vcfg.pareto_alpha
        xm = vcfg.mean * (alpha - 1) / alpha
        u = torch.rand(shape, generator=gen, device=device, dtype=torch.float64)
        return xm * (1 - u).pow(-1 / alpha)
    raise ValueError(f"unknown valuation law {dist!r}")


def _requirements(m, shape, gen, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accuracy-floor quantile q, deadline (s) and the public value factor of each user, by profile.

    iid: requirements and values independent (factor 1). tiered: the value grows with the accuracy
    tier and the deadline's urgency, factor (0.5 + q)(0.5 + urgency), mean 1. two_class: a share of
    premium users with high accuracy floors, tight deadlines and `premium_ratio` times the basic
    users' value, rescaled so the mean factor is 1. The class is public (it is what the user asks
    for); only the value within it is private.
    """
    q = _uniform(m.accuracy_floor, shape, gen, device)
    deadline = _uniform(m.deadline_ms, shape, gen, device, 1e-3)
    if m.profile == "iid":
        return q, deadline, torch.ones(shape, dtype=torch.float64, device=device)
    lo, hi = m.deadline_ms[0] * 1e-3, m.deadline_ms[1] * 1e-3
    if m.profile == "tiered":
        urgency = (hi - deadline) / max(hi - lo, 1e-12)
        return q, deadline, (0.5 + q) * (0.5 + urgency)
    share, ratio = m.premium_share, m.premium_ratio
    premium = torch.rand(shape, generator=gen, device=device, dtype=torch.float64) < share
    q = torch.where(premium, 0.75 + 0.25 * q, 0.5 * q)
    span = hi - lo
    deadline = torch.where(
        premium, lo + 0.25 * span * (deadline - lo) / span, lo + span * (0.5 + 0.5 * (deadline - lo) / span)
    )
    norm = share * ratio + (1 - share)
    return q, deadline, torch.where(premium, ratio / norm, 1 / norm)


def sample_markets(cfg, batch: int, gen: torch.Generator, device: str | torch.device = "cpu") -> Market:
    """Draw `batch` independent markets from the aeria config (cfg = the `aeria` node)."""
    m = cfg.market
    workloads = provider_workloads(m)
    shape = (batch, m.providers, m.users_per_provider)
    acc = [cfg.exit_accuracy[w] for w in workloads]
    lo = torch.tensor([min(a) for a in acc], dtype=torch.float64, device=device).view(1, -1, 1)
    hi = torch.tensor([max(a) for a in acc], dtype=torch.float64, device=device).view(1, -1, 1)
    q, deadline, factor = _requirements(m, shape, gen, device)
    law = draw_law(m.valuation, shape, gen, device)
    if m.valuation.relative_to_cost:
        ref = torch.tensor([reference_cost(w, m) for w in workloads], dtype=torch.float64, device=device)
        factor = factor * ref.view(1, -1, 1)
    return Market(
        workloads=workloads,
        device_flops=_uniform(m.device_gflops, shape, gen, device, 1e9),
        uplink_bps=_uniform(m.uplink_mbps, shape, gen, device, 1e6),
        deadline_s=deadline,
        acc_floor=lo + q * (hi - lo),
        input_scale=_uniform(m.input_scale, shape, gen, device),
        value=law * factor,
        capacity_flops=float(m.edge_capacity_tflops) * 1e12,
        value_scale=factor,
    )


def prior_values(market: Market, cfg, samples: int, gen: torch.Generator) -> torch.Tensor:
    """(B, M, n, samples) values drawn from what a provider knows: the law and each user's public
    class, never the realised values (the posted-price baseline prices from these)."""
    law = draw_law(cfg.market.valuation, (*market.shape, samples), gen, market.value.device)
    return law * market.value_scale.unsqueeze(-1)


@dataclass
class Service:
    """The chosen (partition, exit) per user, and what it costs. Never reads a bid."""

    feasible: torch.Tensor  # (B, M, n) bool
    edge_flops_s: torch.Tensor  # (B, M, n) minimum edge FLOP/s that meets the deadline
    cost: torch.Tensor  # (B, M, n) lease cost of that allocation
    accuracy: torch.Tensor  # (B, M, n) accuracy of the chosen exit
    admitted: torch.Tensor  # (B, M, n) bool: feasible and within the provider's capacity share


@dataclass
class Options:
    """Every (partition, exit) pair of every user: its edge demand and whether it is allowed."""

    demand: torch.Tensor  # (B, M, n, C) edge FLOP/s needed to meet the deadline
    allowed: torch.Tensor  # (B, M, n, C) feasible for accuracy, deadline (and energy)
    cand: Candidates


def service_options(market: Market, cfg) -> Options:
    """Latency model of every candidate for every user (shared by all partition modes)."""
    m = cfg.market
    cand = _candidates(
        market.workloads,
        tuple(tuple(cfg.exit_accuracy[w]) for w in market.workloads),
        int(m.input_bits),
        int(m.feature_bits),
    )
    dev = market.value.device
    col = lambda t: t.to(dev).unsqueeze(0).unsqueeze(2)
    x = lambda t: t.unsqueeze(-1)
    scale = x(market.input_scale)
    t_dev = scale * col(cand.dev_flops) / x(market.device_flops)
    t_tx = scale * col(cand.tx_bits) / x(market.uplink_bps)
    slack = x(market.deadline_s) - t_dev - t_tx
    dev_only = col(cand.device_only)
    allowed = col(cand.present) & (col(cand.accuracy) >= x(market.acc_floor))
    allowed &= torch.where(dev_only, slack >= 0, slack > 0)
    if m.energy_budget_j is not None:
        allowed &= m.device_power_w * t_dev + m.tx_power_w * t_tx <= m.energy_budget_j
    if m.device_only_users == "exclude":
        allowed &= ~dev_only
    demand = torch.where(
        dev_only, torch.zeros_like(slack), scale * col(cand.edge_flops) / slack.clamp_min(1e-12)
    )
    return Options(demand, allowed, cand)


def choose_service(market: Market, cfg, mode: str = "auto", options: Options | None = None) -> Service:
    """The service model `mode`: which (partition, exit) pair each user gets, bid-independently.

    auto: per user, the feasible pair needing the least edge capacity (AERIA's joint choice);
    edge_only / device_only / partition_only: the same choice restricted to partition point 0, to
    the device, or to the final exit (no early exit); uniform: one pair per provider for all its
    users (non-personalised), the pair feasible for the most users (ties: least total demand).
    """
    m = cfg.market
    opt = options if options is not None else service_options(market, cfg)
    dev = market.value.device
    masks = {
        "auto": None,
        "uniform": None,
        "edge_only": opt.cand.edge_only,
        "device_only": opt.cand.device_only,
        "partition_only": opt.cand.final_exit,
    }
    if mode not in masks:
        raise ValueError(f"unknown service model {mode!r}; use one of {SERVICES}")
    allowed = opt.allowed
    if masks[mode] is not None:
        allowed = allowed & masks[mode].to(dev).unsqueeze(0).unsqueeze(2)
    demand = torch.where(allowed, opt.demand, torch.full_like(opt.demand, float("inf")))
    if mode == "uniform":
        count = allowed.sum(2).to(torch.float64)  # (B, M, C)
        load = torch.where(allowed, opt.demand, torch.zeros_like(opt.demand)).sum(2)
        key = count - load / (load.amax(-1, keepdim=True) + 1.0)  # most users, then least load
        key = torch.where(opt.cand.present.to(dev).unsqueeze(0), key, torch.full_like(key, -float("inf")))
        best = key.argmax(-1).view(*key.shape[:2], 1, 1).expand(*demand.shape[:3], 1)
    else:
        best = demand.argmin(dim=-1, keepdim=True)
    edge = demand.gather(-1, best).squeeze(-1)
    feasible = torch.isfinite(edge)
    edge = torch.where(feasible, edge, torch.zeros_like(edge))
    accuracy = opt.cand.accuracy.to(dev)[
        torch.arange(len(market.workloads), device=dev).view(1, -1, 1), best.squeeze(-1)
    ]
    cost = m.lease_price * edge / 1e9 * m.slot_s
    shares = capacity_shares(edge, feasible, market.capacity_flops, m.capacity_split)
    admitted = feasible & _within_capacity(edge, feasible, shares, m.capacity_rule)
    return Service(feasible, edge, cost, accuracy, admitted)


def capacity_shares(edge: torch.Tensor, feasible: torch.Tensor, capacity: float, split: str) -> torch.Tensor:
    """The EIP's allocation of its capacity among providers, (B, M, 1) FLOP/s; never reads a bid.

    equal: capacity / M each. demand: each provider declares the edge capacity its feasible users
    would need at the lease price; the EIP serves every declaration in full when the total fits,
    else in proportion to it (capacity is not left idle with a provider that needs none).
    """
    providers = edge.shape[1]
    if split == "equal":
        return torch.full((*edge.shape[:2], 1), capacity / providers, dtype=edge.dtype, device=edge.device)
    declared = torch.where(feasible, edge, torch.zeros_like(edge)).sum(-1, keepdim=True)  # (B, M, 1)
    total = declared.sum(1, keepdim=True)
    scale = torch.where(total > capacity, capacity / total.clamp_min(1e-300), torch.ones_like(total))
    return declared * scale


def _within_capacity(
    edge: torch.Tensor, feasible: torch.Tensor, share: torch.Tensor, rule: str
) -> torch.Tensor:
    """Admit users by increasing edge demand until the provider's share is full (bid-independent)."""
    if rule == "ignore":
        return torch.ones_like(feasible)
    key = torch.where(feasible, edge, torch.full_like(edge, float("inf")))
    sorted_edge, order = torch.sort(key, dim=-1, stable=True)
    used = torch.cumsum(
        torch.where(torch.isfinite(sorted_edge), sorted_edge, torch.zeros_like(sorted_edge)), -1
    )
    ok_sorted = used <= share * (1 + 1e-12)
    return torch.empty_like(ok_sorted).scatter_(-1, order, ok_sorted)


def _map_tensors(obj, fn):
    """A copy of a Market/Service dataclass with `fn` applied to each of its tensor fields."""
    return replace(
        obj,
        **{
            f.name: fn(getattr(obj, f.name))
            for f in fields(obj)
            if isinstance(getattr(obj, f.name), torch.Tensor)
        },
    )


def replicate(obj, b: int, reps: int):
    """Market b of a batched Market/Service, repeated `reps` times along the batch axis (a view)."""
    return _map_tensors(obj, lambda t: t[b : b + 1].expand(reps, *t.shape[1:]))


def repeat_markets(obj, reps: int):
    """Every market of a batched Market/Service `reps` times in a row (copies of market b at
    b*reps ... b*reps + reps - 1), to replay each profile under independent coins."""
    return _map_tensors(obj, lambda t: t.repeat_interleave(reps, dim=0))
