"""Typed config of the AERIA tasks (registered in Hydra's ConfigStore) and its validation.

Every field the abstract leaves open is here with a default that is our choice; README.md lists
them in the "our choices" table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from edgeai_repro.core.errors import require


class Valuation(str, Enum):
    uniform = "uniform"
    normal = "normal"
    lognormal = "lognormal"
    pareto = "pareto"


@dataclass
class ValuationConf:
    dist: Valuation = Valuation.uniform
    # Values are drawn in units of the workload's reference serving cost (relative_to_cost=true),
    # so that every workload has a market: cheap and expensive DNNs alike.
    relative_to_cost: bool = True
    low: float = 0.0          # uniform
    high: float = 3.0
    mean: float = 1.5         # normal (truncated at 0) and lognormal (mean of the value itself)
    std: float = 0.75
    pareto_alpha: float = 2.5  # heavy tail; scaled so that the mean equals `mean`
    accuracy_weighted: bool = False  # value x achieved accuracy / best exit accuracy


@dataclass
class MarketConf:
    workload: str = "mixed"   # one of the four workloads, or mixed (providers cycle through them)
    providers: int = 4
    users_per_provider: int = 50
    profile: str = "iid"      # iid | tiered | two_class: how values relate to the users' requirements
    premium_share: float = 0.2   # two_class: share of premium users
    premium_ratio: float = 5.0   # two_class: a premium user's value over a basic user's
    edge_capacity_tflops: float = 20.0
    capacity_split: str = "demand"     # demand | equal: the EIP's allocation among providers
    capacity_rule: str = "prefilter"   # prefilter | ignore
    lease_price: float = 0.01          # currency per GFLOP/s leased for one slot
    slot_s: float = 1.0
    device_gflops: list[float] = field(default_factory=lambda: [5.0, 20.0])
    uplink_mbps: list[float] = field(default_factory=lambda: [1.0, 50.0])
    deadline_ms: list[float] = field(default_factory=lambda: [50.0, 500.0])
    accuracy_floor: list[float] = field(default_factory=lambda: [0.0, 1.0])  # quantiles of exit range
    input_scale: list[float] = field(default_factory=lambda: [0.5, 1.5])    # task complexity
    input_bits: int = 8
    feature_bits: int = 32
    energy_budget_j: Optional[float] = None
    device_power_w: float = 5.0
    tx_power_w: float = 1.0
    device_only_users: str = "auction"  # auction (served at zero edge cost) | exclude
    valuation: ValuationConf = field(default_factory=ValuationConf)


@dataclass
class WorstCaseConf:
    """Net-bid profiles for the worst-case competitive ratio (aeria/competitive_ratio)."""

    profile: str = "equal_revenue"   # see aeria/worst_case.py PROFILES
    users: int = 10
    coin_draws: int = 512            # draws of the coins per profile: E[revenue] is their mean


@dataclass
class AeriaConf:
    market: MarketConf = field(default_factory=MarketConf)
    # The approaches are every service model x every pricing rule (a Hydra config group with
    # `_target_`, conf/aeria/pricing/); the approach named "auto+core" is AERIA.
    services: list[str] = field(default_factory=lambda: ["auto", "edge_only", "device_only", "partition_only", "uniform"])
    pricing: dict[str, Any] = field(default_factory=dict)
    consensus_scope: str = "provider"   # provider | market: where one u is drawn
    revenue: str = "net"                # net (payments - lease cost) | gross (payments)
    posted_samples: int = 16            # prior draws per user for posted pricing
    exit_accuracy: dict[str, list[float]] = field(default_factory=dict)
    markets: int = MISSING             # random markets per cell (per seed): set by the scale
    markets_per_batch: int = 25
    coin_draws: int = 1                # replays of each market under fresh coins (expected revenue)
    # property checks
    users_checked: int = 8             # per market
    misreport_grid: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.01, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0])
    integer_profiles_n: int = MISSING  # exhaustive truthfulness over {0..4}^n for n <= this, 0: off (set by the scale)
    # run time
    runtime_users: int = 1000
    runtime_repeats: int = MISSING     # set by the scale
    naive_max_users: int = 10000
    worst_case: WorstCaseConf = field(default_factory=WorstCaseConf)


ConfigStore.instance().store(group="aeria", name="schema", node=AeriaConf)

WORKLOADS = ("alexnet", "vgg16", "resnet50", "mobilenetv2")


def _range(key: str, value: Any, positive: bool = True) -> None:
    require(len(value) == 2 and value[0] <= value[1],
            f"aeria.market.{key}={list(value)} must be [low, high] with low <= high.")
    if positive:
        require(value[0] > 0, f"aeria.market.{key}={list(value)} must be positive; use values above 0.")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key and the fix for any impossible AERIA setting."""
    from edgeai_repro.aeria.market import PROFILES, SERVICES
    from edgeai_repro.aeria.worst_case import PROFILES as WORST

    t = cfg.trainer
    require(t.devices in (1, "1") and t.strategy == "auto",
            f"trainer devices={t.devices}, strategy={t.strategy} does not apply to AERIA: a simulation cell runs on one "
            "device; use trainer=cpu or trainer=gpu.")
    require(str(t.precision) in {"32-true", "32", "64-true", "64"},
            f"trainer.precision={t.precision} does not apply to AERIA: its auctions compute in float64 whatever the "
            "trainer; use trainer.precision=32-true.")
    a = cfg.aeria
    m = a.market
    require(m.workload == "mixed" or m.workload in WORKLOADS,
            f"aeria.market.workload={m.workload!r} is unknown; use one of {', '.join(WORKLOADS)} or mixed.")
    require(m.providers >= 1, f"aeria.market.providers={m.providers} must be at least 1.")
    require(m.users_per_provider >= 1,
            f"aeria.market.users_per_provider={m.users_per_provider} must be a positive number of users.")
    require(m.profile in PROFILES, f"aeria.market.profile={m.profile!r} is unknown; use one of {', '.join(PROFILES)}.")
    require(0 < m.premium_share < 1 and m.premium_ratio >= 1,
            f"aeria.market needs 0 < premium_share < 1 and premium_ratio >= 1 (got {m.premium_share}, {m.premium_ratio}).")
    require(m.edge_capacity_tflops > 0,
            f"aeria.market.edge_capacity_tflops={m.edge_capacity_tflops} must be positive.")
    require(m.capacity_split in {"demand", "equal"},
            f"aeria.market.capacity_split={m.capacity_split!r} is unknown; use demand or equal.")
    require(m.capacity_rule in {"prefilter", "ignore"},
            f"aeria.market.capacity_rule={m.capacity_rule!r} is unknown; use prefilter or ignore.")
    require(m.device_only_users in {"auction", "exclude"},
            f"aeria.market.device_only_users={m.device_only_users!r} is unknown; use auction or exclude.")
    require(m.lease_price >= 0, f"aeria.market.lease_price={m.lease_price} must not be negative.")
    require(m.slot_s > 0, f"aeria.market.slot_s={m.slot_s} must be positive.")
    for key in ("device_gflops", "uplink_mbps", "deadline_ms", "input_scale"):
        _range(key, m[key])
    _range("accuracy_floor", m.accuracy_floor, positive=False)
    require(0 <= m.accuracy_floor[0] and m.accuracy_floor[1] <= 1,
            f"aeria.market.accuracy_floor={list(m.accuracy_floor)} are quantiles and must lie in [0, 1].")
    v = m.valuation
    require(v.low >= 0 and v.high > v.low,
            f"aeria.market.valuation low={v.low}, high={v.high} need 0 <= low < high.")
    require(v.mean > 0 and v.std > 0, "aeria.market.valuation.mean and .std must be positive.")
    require(v.pareto_alpha > 1, f"aeria.market.valuation.pareto_alpha={v.pareto_alpha} must exceed 1 (finite mean).")
    require(len(a.services) > 0, "aeria.services is empty; list at least one service model, e.g. [auto].")
    for name in a.services:
        require(name in SERVICES, f"aeria.services contains unknown service model {name!r}; choose from {', '.join(SERVICES)}.")
    require(len(a.pricing) > 0, "aeria.pricing is empty; select at least one rule, e.g. aeria/pricing=[core].")
    for name, node in a.pricing.items():
        require(isinstance(node, DictConfig) and "_target_" in node,
                f"aeria.pricing.{name} has no _target_; a pricing rule is a YAML in conf/aeria/pricing/ naming its class.")
        if "c" in node:
            require(node.c > 1, f"aeria.pricing.{name}.c={node.c} must be greater than 1 (base of the consensus grid).")
        if "estimate" in node:
            require(node.estimate in {"f", "f2"}, f"aeria.pricing.{name}.estimate={node.estimate!r} is unknown; use f or f2.")
        if "fraction" in node:
            require(0 < node.fraction <= 1, f"aeria.pricing.{name}.fraction={node.fraction} must lie in (0, 1].")
    require(a.consensus_scope in {"provider", "market"},
            f"aeria.consensus_scope={a.consensus_scope!r} is unknown; use provider or market.")
    require(a.revenue in {"net", "gross"}, f"aeria.revenue={a.revenue!r} is unknown; use net or gross.")
    require(a.posted_samples >= 1, f"aeria.posted_samples={a.posted_samples} must be at least 1.")
    from edgeai_repro.aeria.workloads import n_exits as exits_of

    for w in WORKLOADS:
        acc = a.exit_accuracy.get(w)
        require(acc is not None, f"aeria.exit_accuracy.{w} is missing; give one accuracy per exit.")
        n_exits = exits_of(w)
        require(len(acc) == n_exits,
                f"aeria.exit_accuracy.{w} lists {len(acc)} accuracies but {w} has {n_exits} exits; give {n_exits}.")
        require(all(0 < x <= 1 for x in acc) and list(acc) == sorted(acc),
                f"aeria.exit_accuracy.{w}={list(acc)} must be non-decreasing accuracies in (0, 1].")
    require(a.markets >= 1 and a.markets_per_batch >= 1, "aeria.markets and aeria.markets_per_batch must be positive.")
    require(a.coin_draws >= 1, f"aeria.coin_draws={a.coin_draws} must be at least 1.")
    require(a.users_checked >= 1, f"aeria.users_checked={a.users_checked} must be at least 1.")
    require(0 <= a.integer_profiles_n <= 6, f"aeria.integer_profiles_n={a.integer_profiles_n} must lie in 0..6.")
    require(a.runtime_users >= 2, f"aeria.runtime_users={a.runtime_users} must be at least 2.")
    require(a.runtime_repeats >= 1, f"aeria.runtime_repeats={a.runtime_repeats} must be at least 1.")
    w = a.worst_case
    require(w.profile in WORST, f"aeria.worst_case.profile={w.profile!r} is unknown; use one of {', '.join(WORST)}.")
    require(w.users >= 2 and w.coin_draws >= 1, "aeria.worst_case needs users >= 2 and coin_draws >= 1.")
