"""Typed config of the AERIA tasks (registered in Hydra's ConfigStore) and its validation.

Every field the abstract leaves open is here with a default that is our choice; README.md lists
them in the "our choices" table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from edgeai_repro.core.errors import require
from edgeai_repro.core.schema import Option, check_all, check_range, typed


class Valuation(Option):
    uniform = "uniform"
    normal = "normal"
    lognormal = "lognormal"
    pareto = "pareto"


class Workload(Option):
    """The four multi-exit DNNs (aeria/workloads.py), or `mixed`: providers cycle through them."""

    alexnet = "alexnet"
    vgg16 = "vgg16"
    resnet50 = "resnet50"
    mobilenetv2 = "mobilenetv2"
    mixed = "mixed"


WORKLOADS = tuple(w.value for w in Workload if w is not Workload.mixed)
# Exits per workload (3 side branches and the final exit), stated here so that validating a config
# never imports torch to build the networks; tests/test_workloads.py checks it against them.
EXITS = {"alexnet": 4, "vgg16": 4, "resnet50": 4, "mobilenetv2": 4}


class Service(Option):
    """Service models (market.choose_service): who chooses the partition and exit, and how."""

    auto = "auto"
    edge_only = "edge_only"
    device_only = "device_only"
    partition_only = "partition_only"
    uniform = "uniform"


class MarketProfile(Option):
    """How the users' values relate to their requirements (market.sample_markets)."""

    iid = "iid"
    tiered = "tiered"
    two_class = "two_class"


class CapacitySplit(Option):
    demand = "demand"  # the EIP splits its capacity in proportion to the providers' declared demand
    equal = "equal"


class CapacityRule(Option):
    prefilter = "prefilter"
    ignore = "ignore"


class DeviceOnlyUsers(Option):
    auction = "auction"  # served at zero edge cost
    exclude = "exclude"


class ConsensusScope(Option):
    provider = "provider"  # one u per provider's auction
    market = "market"  # one u per market


class RevenueBasis(Option):
    net = "net"  # payments minus the lease paid to the EIP
    gross = "gross"  # payments


class WorstProfile(Option):
    """Fixed net-bid profiles of aeria/competitive_ratio (aeria/worst_case.py)."""

    equal_revenue = "equal_revenue"
    equal = "equal"
    whale_2n = "whale_2n"  # one bidder worth m * n among bidders worth 1: m on both sides of c
    whale_4n = "whale_4n"
    whale_8n = "whale_8n"
    whale_32n = "whale_32n"
    one_one_eps = "one_one_eps"  # [1, 1, eps, ...]: the F2 estimate's weak spot
    two_class = "two_class"
    uniform = "uniform"
    pareto = "pareto"
    searched = "searched"  # searched per rule to minimise its expected revenue / F2


@dataclass
class ValuationConf:
    dist: Valuation = Valuation.uniform
    # Values are drawn in units of the workload's reference serving cost (relative_to_cost=true),
    # so that every workload has a market: cheap and expensive DNNs alike.
    relative_to_cost: bool = True
    low: float = 0.0  # uniform
    high: float = 3.0
    mean: float = 1.5  # normal (truncated at 0) and lognormal (mean of the value itself)
    std: float = 0.75
    pareto_alpha: float = 2.5  # heavy tail; scaled so that the mean equals `mean`
    accuracy_weighted: bool = False  # value x achieved accuracy / best exit accuracy

    def check(self, key: str) -> None:
        require(
            self.low >= 0 and self.high > self.low,
            f"{key} low={self.low}, high={self.high} need 0 <= low < high.",
        )
        require(self.mean > 0 and self.std > 0, f"{key}.mean and .std must be positive.")
        require(self.pareto_alpha > 1, f"{key}.pareto_alpha={self.pareto_alpha} must exceed 1 (finite mean).")


@dataclass
class MarketConf:
    workload: Workload = Workload.mixed
    providers: int = 4
    users_per_provider: int = 50
    profile: MarketProfile = MarketProfile.iid
    premium_share: float = 0.2  # two_class: share of premium users
    premium_ratio: float = 5.0  # two_class: a premium user's value over a basic user's
    edge_capacity_tflops: float = 20.0
    capacity_split: CapacitySplit = CapacitySplit.demand  # the EIP's allocation among providers
    capacity_rule: CapacityRule = CapacityRule.prefilter
    lease_price: float = 0.01  # currency per GFLOP/s leased for one slot
    slot_s: float = 1.0
    device_gflops: list[float] = field(default_factory=lambda: [5.0, 20.0])
    uplink_mbps: list[float] = field(default_factory=lambda: [1.0, 50.0])
    deadline_ms: list[float] = field(default_factory=lambda: [50.0, 500.0])
    accuracy_floor: list[float] = field(default_factory=lambda: [0.0, 1.0])  # quantiles of exit range
    input_scale: list[float] = field(default_factory=lambda: [0.5, 1.5])  # task complexity
    input_bits: int = 8
    feature_bits: int = 32
    energy_budget_j: float | None = None
    device_power_w: float = 5.0
    tx_power_w: float = 1.0
    device_only_users: DeviceOnlyUsers = DeviceOnlyUsers.auction
    valuation: ValuationConf = field(default_factory=ValuationConf)

    def check(self, key: str) -> None:
        require(self.providers >= 1, f"{key}.providers={self.providers} must be at least 1.")
        require(
            self.users_per_provider >= 1,
            f"{key}.users_per_provider={self.users_per_provider} must be a positive number of users.",
        )
        require(
            0 < self.premium_share < 1 and self.premium_ratio >= 1,
            f"{key} needs 0 < premium_share < 1 and premium_ratio >= 1 (got {self.premium_share}, "
            f"{self.premium_ratio}).",
        )
        require(
            self.edge_capacity_tflops > 0,
            f"{key}.edge_capacity_tflops={self.edge_capacity_tflops} must be positive.",
        )
        require(self.lease_price >= 0, f"{key}.lease_price={self.lease_price} must not be negative.")
        require(self.slot_s > 0, f"{key}.slot_s={self.slot_s} must be positive.")
        for name in ("device_gflops", "uplink_mbps", "deadline_ms", "input_scale"):
            check_range(f"{key}.{name}", getattr(self, name))
        check_range(f"{key}.accuracy_floor", self.accuracy_floor, positive=False)
        require(
            self.accuracy_floor[0] >= 0 and self.accuracy_floor[1] <= 1,
            f"{key}.accuracy_floor={list(self.accuracy_floor)} are quantiles and must lie in [0, 1].",
        )


@dataclass
class WorstCaseConf:
    """Net-bid profiles for the worst-case competitive ratio (aeria/competitive_ratio)."""

    profile: WorstProfile = WorstProfile.equal_revenue
    users: int = 10
    coin_draws: int = 512  # draws of the coins per profile: E[revenue] is their mean
    # profile=searched: a local search per rule (aeria/worst_case.py `search`), scored on fresh coins
    search_iters: int = 60
    search_batch: int = 16
    search_draws: int = 128
    # aeria/consensus_base's worst case per base: the minimum over every fixed profile at each of
    # `sizes` bidders, and over a profile searched at each of `search_sizes`
    sizes: list[int] = field(default_factory=lambda: [2, 5, 10, 50, 200])
    search_sizes: list[int] = field(default_factory=lambda: [10])

    def check(self, key: str) -> None:
        require(self.users >= 2 and self.coin_draws >= 1, f"{key} needs users >= 2 and coin_draws >= 1.")
        require(
            all(n >= 2 for n in [*self.sizes, *self.search_sizes]),
            f"{key}.sizes and search_sizes need at least 2 bidders each.",
        )
        require(
            min(self.search_iters, self.search_batch, self.search_draws) >= 1,
            f"{key}.search_iters, search_batch and search_draws must be at least 1.",
        )


# Top-1 accuracy per exit (our choice, not measured: no training here). The final exits are the
# usual ImageNet figures of these architectures; early exits are set lower, in the range reported
# for BranchyNet-style side branches.
EXIT_ACCURACY = {
    "alexnet": [0.34, 0.45, 0.52, 0.565],
    "vgg16": [0.45, 0.58, 0.67, 0.716],
    "resnet50": [0.48, 0.62, 0.71, 0.761],
    "mobilenetv2": [0.44, 0.57, 0.66, 0.719],
}


@dataclass
class AeriaConf:
    market: MarketConf = field(default_factory=MarketConf)
    # The approaches are every service model x every pricing rule (a Hydra config group with
    # `_target_`, conf/aeria/pricing/); the approach named "auto+core" is AERIA.
    services: list[Service] = field(default_factory=lambda: list(Service))
    pricing: dict[str, Any] = field(default_factory=dict)
    consensus_scope: ConsensusScope = ConsensusScope.provider  # where one u is drawn
    revenue: RevenueBasis = RevenueBasis.net
    posted_samples: int = 16  # prior draws per user for posted pricing
    exit_accuracy: dict[str, list[float]] = field(
        default_factory=lambda: {k: list(v) for k, v in EXIT_ACCURACY.items()}
    )
    markets: int = MISSING  # random markets per cell (per seed): set by the scale
    markets_per_batch: int = 25
    coin_draws: int = 1  # replays of each market under fresh coins (expected revenue)
    # property checks
    users_checked: int = 8  # per market
    misreport_grid: list[float] = field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.01, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0]
    )
    integer_profiles_n: int = (
        MISSING  # exhaustive truthfulness over {0..4}^n for n <= this, 0: off (set by the scale)
    )
    # run time
    runtime_users: int = 1000
    runtime_repeats: int = MISSING  # set by the scale
    naive_max_users: int = 10000
    worst_case: WorstCaseConf = field(default_factory=WorstCaseConf)

    def check(self, key: str) -> None:
        require(
            len(self.services) > 0, f"{key}.services is empty; list at least one service model, e.g. [auto]."
        )
        require(
            len(self.pricing) > 0,
            f"{key}.pricing is empty; select at least one rule, e.g. aeria/pricing=[core].",
        )
        for name, node in self.pricing.items():
            require(
                isinstance(node, dict) and "_target_" in node,
                f"{key}.pricing.{name} has no _target_; a pricing rule is a YAML in conf/aeria/pricing/ naming its "
                "class.",
            )
            if "c" in node:
                require(
                    node["c"] > 1,
                    f"{key}.pricing.{name}.c={node['c']} must be greater than 1 (base of the "
                    "consensus grid).",
                )
            if "estimate" in node:
                require(
                    node["estimate"] in {"f", "f2"},
                    f"{key}.pricing.{name}.estimate={node['estimate']!r} is unknown; use f or f2.",
                )
            if "fraction" in node:
                require(
                    0 < node["fraction"] <= 1,
                    f"{key}.pricing.{name}.fraction={node['fraction']} must lie in (0, 1].",
                )
        require(self.posted_samples >= 1, f"{key}.posted_samples={self.posted_samples} must be at least 1.")
        for w in WORKLOADS:
            acc = self.exit_accuracy.get(w)
            require(acc is not None, f"{key}.exit_accuracy.{w} is missing; give one accuracy per exit.")
            exits = EXITS[w]
            require(
                len(acc) == exits,
                f"{key}.exit_accuracy.{w} lists {len(acc)} accuracies but {w} has {exits} exits; give {exits}.",
            )
            require(
                all(0 < x <= 1 for x in acc) and list(acc) == sorted(acc),
                f"{key}.exit_accuracy.{w}={list(acc)} must be non-decreasing accuracies in (0, 1].",
            )
        require(
            self.markets >= 1 and self.markets_per_batch >= 1,
            f"{key}.markets and {key}.markets_per_batch must be positive.",
        )
        require(self.coin_draws >= 1, f"{key}.coin_draws={self.coin_draws} must be at least 1.")
        require(self.users_checked >= 1, f"{key}.users_checked={self.users_checked} must be at least 1.")
        require(
            0 <= self.integer_profiles_n <= 6,
            f"{key}.integer_profiles_n={self.integer_profiles_n} must lie in 0..6.",
        )
        require(self.runtime_users >= 2, f"{key}.runtime_users={self.runtime_users} must be at least 2.")
        require(
            self.runtime_repeats >= 1, f"{key}.runtime_repeats={self.runtime_repeats} must be at least 1."
        )


ConfigStore.instance().store(group="aeria", name="schema", node=AeriaConf)


def settings(cfg: DictConfig) -> AeriaConf:
    """The cell's `aeria` section as its dataclass: what the tasks pass down (never the raw config)."""
    return typed(cfg.aeria)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key and the fix for any impossible AERIA setting."""
    t = cfg.trainer
    require(
        t.devices in (1, "1") and t.strategy == "auto",
        f"trainer devices={t.devices}, strategy={t.strategy} does not apply to AERIA: a simulation cell runs on one "
        "device; use trainer=cpu or trainer=gpu.",
    )
    require(
        str(t.precision) in {"32-true", "32", "64-true", "64"},
        f"trainer.precision={t.precision} does not apply to AERIA: its auctions compute in float64 whatever the "
        "trainer; use trainer.precision=32-true.",
    )
    check_all(settings(cfg), "aeria")
