"""Typed config of the incentive tasks and its validation (schemas only: no torch, no runtime classes).
Every value is our choice (README)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from edgeai_repro.core.errors import require
from edgeai_repro.core.schema import Option, check_all, typed


class Coupling(Option):
    shared = "shared"  # one pool: each worker chooses among the LMOs' offers
    private = "private"  # one pool per LMO: stage 2 splits into independent one-buyer problems


class Feedback(Option):
    """What stage 2 feeds back to stage 1's unit costs P (ASOSA's outer loop, docs/incentive.md)."""

    unit_cost = "unit_cost"  # P_hat = paid / collected: the average price paid
    delivery = "delivery"  # P_hat = P x target / delivered: data short of the target cost more than P


class CostScale(Option):
    """How the workers' cost scale is set from the first stage-1 game (env.World)."""

    per_lmo = "per_lmo"  # mean over LMOs of v0 T W / target_m: an LMO near drop-out dominates
    mean_target = "mean_target"  # v0 T W / mean target


class WorkerModel(Option):
    quantal = "quantal"  # logit choice among this round's offers
    adaptive = "adaptive"  # choice probabilities move adapt_rate of the way each round (inertia)
    learning = "learning"  # workers learn per-LMO attractions from their experience


class Algorithm(Option):
    maddpg = "maddpg"
    td3 = "td3"


class Critic(Option):
    centralized = "centralized"
    independent = "independent"


def _range(key: str, value, strict: bool = False) -> None:
    ok = len(value) == 2 and value[0] <= value[1] and (value[0] > 0 if strict else value[0] >= 0)
    require(ok, f"{key}={list(value)} must be [low, high] with {'0 < ' if strict else '0 <= '}low <= high.")


@dataclass
class EnvConf:
    workers: int = 10  # workers per LMO when pool_size is null (the pool then grows with the LMOs)
    pool_size: int | None = None  # total workers, shared by the LMOs; null: `workers` x lmos
    # coupling=private only: how many of the pool's workers each LMO has to itself (the rest serve no
    # one); null: the pool split evenly. A shared pool has no quotas: every worker may serve every LMO.
    quotas: list[int] | None = None
    horizon: int = 10
    theta: float = 1.0  # base reward scale, in units of the LMO's round budget per worker
    worker_cost: list[float] = field(default_factory=lambda: [0.5, 2.0])  # kappa_w (see env.World)
    participation_cost: list[float] = field(
        default_factory=lambda: [0.0, 0.2]
    )  # e_w / mean round budget per worker
    max_price: float = 2.0  # price ceiling in units of the LMO's value per data unit
    choice_temperature: float = (
        0.1  # workers' logit temperature, in units of the mean round budget per worker
    )
    switching_cost: float = 0.0  # loyalty bonus for last round's LMO (same unit); 0: rounds are independent
    coupling: Coupling = Coupling.shared
    cost_drift: float = 0.0  # std of the log-normal drift of c_w per round
    worker_model: WorkerModel = WorkerModel.quantal
    # The workers' cost scale from the first game (env.World). per_lmo (today's) lets an LMO near
    # stage 1's drop-out threshold make the whole pool dear (issue 38, open: docs/incentive.md).
    cost_scale: CostScale = CostScale.per_lmo
    adapt_rate: float = 0.5
    welfare_weight: float = 0.0

    def pool(self, lmos: int) -> int:
        """The number of workers in the pool."""
        return int(self.pool_size) if self.pool_size is not None else self.workers * lmos

    def homes(self, lmos: int) -> list[int]:
        """How many workers each LMO has to itself under coupling=private (quotas, else an even split)."""
        if self.quotas is not None:
            return [int(q) for q in self.quotas]
        n = self.pool(lmos)
        return [n // lmos + (1 if m < n % lmos else 0) for m in range(lmos)]

    def remembers(self) -> bool:
        """Whether this round's offers move later rounds' choices (the per-round game is then not the
        whole game): switching costs, inertia or learning workers."""
        return self.switching_cost > 0 or self.worker_model != WorkerModel.quantal

    def check(self, key: str) -> None:
        require(self.workers >= 1 and self.horizon >= 1, f"{key}.workers and {key}.horizon must be positive.")
        require(self.theta >= 0, f"{key}.theta={self.theta} must not be negative.")
        _range(f"{key}.worker_cost", self.worker_cost, strict=True)
        _range(f"{key}.participation_cost", self.participation_cost)
        require(
            self.choice_temperature > 0 and self.switching_cost >= 0,
            f"{key} needs choice_temperature > 0 and switching_cost >= 0.",
        )
        require(
            self.cost_drift >= 0,
            f"{key}.cost_drift={self.cost_drift} is the standard deviation of the log-normal drift of the "
            "workers' costs (which keeps them positive) and cannot be negative; set it >= 0 (0: no drift).",
        )
        require(self.max_price > 0, f"{key}.max_price={self.max_price} must be positive.")
        require(0 < self.adapt_rate <= 1, f"{key}.adapt_rate={self.adapt_rate} must be in (0, 1].")

    def check_pool(self, key: str, lmos: int) -> None:
        """The pool against the number of LMOs (needs both, so IncentiveConf calls it)."""
        pool = self.pool(lmos)
        require(
            self.pool_size is None or pool >= lmos,
            f"{key}.pool_size={pool} is smaller than incentive.lmos={lmos}: give every LMO a worker to bid "
            f"for, {key}.pool_size >= {lmos}.",
        )
        if self.quotas is None:
            return
        q = [int(v) for v in self.quotas]
        require(
            self.coupling == Coupling.private,
            f"{key}.quotas apply to coupling=private (each LMO's own workers); drop them or set "
            f"{key}.coupling=private.",
        )
        require(
            len(q) == lmos and min(q) >= 1,
            f"{key}.quotas={q} must give each of the {lmos} LMOs at least one worker (one positive entry per LMO).",
        )
        require(
            sum(q) <= pool,
            f"{key}.quotas={q} sum to {sum(q)}, above the pool of {pool} workers; lower the quotas or raise "
            f"{key}.pool_size.",
        )


@dataclass
class PolicyConf:
    algorithm: Algorithm = Algorithm.maddpg
    critic: Critic = Critic.centralized
    hidden: int = 64
    actor_lr: float = 3e-4  # actor_lr and critic_lr tuned on incentive.tuning_seeds (docs/incentive.md)
    critic_lr: float = 3e-3
    gamma: float = 0.9
    polyak: float = 0.01
    batch_size: int = 256
    buffer_size: int = 50000
    warmup: int = 512  # random transitions before learning
    explore_std: float = 0.1
    explore_decay: float = 0.999  # per update
    envs: int = 16  # parallel env copies for collection
    steps_per_update: int = 1  # vectorised env steps between updates
    policy_delay: int = 2  # TD3 only
    target_noise: float = 0.1  # TD3 only
    logit_penalty: float = 1e-2

    def check(self, key: str) -> None:
        require(
            self.batch_size >= 1 and self.buffer_size >= self.batch_size,
            f"{key}.buffer_size must be >= batch_size >= 1.",
        )


@dataclass
class CostConf:
    unit: list[float] = field(default_factory=lambda: [0.5, 1.5])  # initial unit data cost P_m ~ U
    fixed: list[float] = field(default_factory=lambda: [0.0, 0.1])  # fixed cost E_m ~ U

    def check(self, key: str) -> None:
        _range(f"{key}.unit", self.unit, strict=True)
        _range(f"{key}.fixed", self.fixed)


@dataclass
class AsosaConf:
    max_iters: int = MISSING  # set by the scale
    damping: float = 0.5  # eta_k = damping / (1 + decay k)
    decay: float = 0.5
    # Stage 2's feedback to P, and the step toward it: P <- P + eta_k (P_hat - P); max_step (when
    # set) caps each LMO's relative change so that one noisy measurement cannot drop it for good.
    # Issue 38 (open): the defaults are today's coupling; docs/incentive.md, "ASOSA", says why.
    feedback: Feedback = Feedback.unit_cost
    max_step: float | None = None
    # Stage 1 frozen at the first game: the loop runs and measures, but P never moves (the
    # residual's noise floor, scripts/asosa_noise_floor.py).
    freeze_stage1: bool = False
    # Learners keep one replay buffer and their Adam moments across outer iterations (false: a fresh
    # buffer, refilled by 512 transitions at the initial exploration noise, and a fresh Adam each time).
    warm_replay: bool = False
    tol: float = 0.05  # fixed-point residual max_m |P_hat - P| / P below which ASOSA has converged
    updates_first: int = (
        MISSING  # policy updates (one critic + one actor step each) in the first outer iteration
    )
    updates_warm: int = MISSING  # ... and in each later one (warm start)
    eval_episodes: int = MISSING  # set by the scale
    nash_iters: int = MISSING  # rounds of iterated best response for the Nash reference (set by the scale)
    # The Nash solver stops when no LMO can gain more than this share of its utility by deviating.
    nash_tol: float = 1e-4
    # Exploitability of the played joint policy: each LMO's best response over offer paths, the others'
    # policies fixed (docs/incentive.md, "References"). false skips it (sweeps that judge convergence only).
    exploitability: bool = True
    # ASOSA's stage-2 policy as the running average of its actors' weights over the outer iterations
    # (iterate averaging); false: the last policy. The convergence test is the same either way.
    average_policy: bool = False

    def check(self, key: str) -> None:
        require(
            self.max_iters >= 1
            and self.tol > 0
            and 0 < self.damping <= 1
            and (self.max_step is None or self.max_step > 0),
            f"{key} needs max_iters >= 1, tol > 0, damping in (0, 1] and max_step > 0 (or null).",
        )
        require(
            self.nash_tol > 0,
            f"{key}.nash_tol={self.nash_tol} must be positive: it is the exploitability below which the Nash "
            "solver stops (1e-4 by default).",
        )


@dataclass
class IncentiveConf:
    # The stage-2 method: a Hydra config group with `_target_` (conf/incentive/method/<name>.yaml).
    method: Any = field(
        default_factory=lambda: {"_target_": "edgeai_repro.incentive.policies.Learned", "name": "asosa"}
    )
    lmos: int = 5
    lam: float = 10.0
    alpha: float = 2.0
    beta: float = 1.0
    allow_dropout: bool = True
    # Hyper-parameters were tuned on these seeds, disjoint from the evaluation seeds (README).
    tuning_seeds: list[int] = field(default_factory=lambda: [100, 101, 102])
    cost: CostConf = field(default_factory=CostConf)
    env: EnvConf = field(default_factory=EnvConf)
    policy: PolicyConf = field(default_factory=PolicyConf)
    asosa: AsosaConf = field(default_factory=AsosaConf)

    def check(self, key: str) -> None:
        require(
            isinstance(self.method, dict) and "_target_" in self.method and "name" in self.method,
            f"{key}.method has no _target_ and name; pick a method with incentive/method=<name> "
            "(one YAML per method in conf/incentive/method/).",
        )
        require(
            self.lmos >= 2,
            f"{key}.lmos={self.lmos} must be at least 2 (zero or one LMO has no Stackelberg game).",
        )
        self.env.check_pool(f"{key}.env", self.lmos)
        require(
            min(self.lam, self.alpha, self.beta) > 0,
            f"{key}.lam, {key}.alpha and {key}.beta must be positive.",
        )
        value = self.lam * self.alpha * self.beta
        require(
            value * (self.lmos - 1) > self.lmos * self.cost.unit[1] or self.allow_dropout,
            f"{key}.lam*alpha*beta*(lmos-1) = {value * (self.lmos - 1):g} does not exceed the largest possible sum "
            f"of unit costs ({self.lmos * self.cost.unit[1]:g}); raise {key}.lam or set {key}.allow_dropout=true.",
        )
        require(
            value > 2 * self.cost.unit[0],
            f"{key}.lam*alpha*beta = {value:g} is too small for even two of the cheapest LMOs to be paid; raise "
            f"{key}.lam.",
        )


ConfigStore.instance().store(group="incentive", name="schema", node=IncentiveConf)


def settings(cfg: DictConfig) -> IncentiveConf:
    """The cell's `incentive` section as its dataclass: what the task passes down."""
    return typed(cfg.incentive)


def validate(cfg: DictConfig) -> None:
    require(
        cfg.trainer.accelerator == "cpu" and cfg.trainer.devices in (1, "1"),
        f"trainer accelerator={cfg.trainer.accelerator}, devices={cfg.trainer.devices} does not apply to the "
        "incentive tasks: their networks are small and run on one CPU thread per cell; use trainer=cpu.",
    )
    require(
        str(cfg.trainer.precision) in {"32-true", "32"},
        f"trainer.precision={cfg.trainer.precision} does not apply to the incentive tasks: their small networks "
        "train in fp32; use trainer.precision=32-true.",
    )
    c = settings(cfg)
    require(
        int(cfg.seed) not in set(c.tuning_seeds),
        f"seed={cfg.seed} is one of incentive.tuning_seeds={list(c.tuning_seeds)}, where the hyper-parameters were "
        "tuned; evaluate on other seeds (or set incentive.tuning_seeds=[] for a tuning run).",
    )
    check_all(c, "incentive")
