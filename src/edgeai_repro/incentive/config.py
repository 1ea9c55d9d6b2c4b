"""Typed config of the incentive tasks and its validation (schemas only: no torch, no runtime classes).
Every value is our choice (README)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from edgeai_repro.core.errors import require



@dataclass
class EnvConf:
    workers: int = 10               # workers per LMO: the shared pool holds workers x LMOs
    horizon: int = 10
    theta: float = 1.0              # base reward scale, in units of the LMO's round budget per worker
    worker_cost: list[float] = field(default_factory=lambda: [0.5, 2.0])         # kappa_w (see env.World)
    participation_cost: list[float] = field(default_factory=lambda: [0.0, 0.2])  # e_w / mean round budget per worker
    max_price: float = 2.0          # price ceiling in units of the LMO's value per data unit
    choice_temperature: float = 0.1  # workers' logit temperature, in units of the mean round budget per worker
    switching_cost: float = 0.0     # loyalty bonus for last round's LMO (same unit); 0: rounds are independent
    coupling: str = "shared"        # shared: one pool, workers choose among LMOs | private: one pool per LMO
    cost_drift: float = 0.0         # std of the log-normal drift of c_w per round
    worker_model: str = "quantal"   # quantal | adaptive (choice probabilities move adapt_rate of the way) | learning
    adapt_rate: float = 0.5
    welfare_weight: float = 0.0


@dataclass
class PolicyConf:
    algorithm: str = "maddpg"     # maddpg | td3
    critic: str = "centralized"   # centralized | independent
    hidden: int = 64
    actor_lr: float = 3e-4
    critic_lr: float = 3e-3
    gamma: float = 0.9
    polyak: float = 0.01
    batch_size: int = 256
    buffer_size: int = 50000
    warmup: int = 512             # random transitions before learning
    explore_std: float = 0.1
    explore_decay: float = 0.999  # per update
    envs: int = 16                # parallel env copies for collection
    steps_per_update: int = 1     # vectorised env steps between updates
    policy_delay: int = 2         # TD3 only
    target_noise: float = 0.1     # TD3 only
    logit_penalty: float = 1e-2


@dataclass
class CostConf:
    unit: list[float] = field(default_factory=lambda: [0.5, 1.5])   # initial unit data cost P_m ~ U
    fixed: list[float] = field(default_factory=lambda: [0.0, 0.1])  # fixed cost E_m ~ U


@dataclass
class AsosaConf:
    max_iters: int = MISSING       # set by the scale
    damping: float = 0.5           # eta_k = damping / (1 + decay k)
    decay: float = 0.5
    tol: float = 0.05              # fixed-point residual max_m |P_hat - P| / P below which ASOSA has converged
    updates_first: int = MISSING   # policy updates in the first outer iteration (set by the scale)
    updates_warm: int = MISSING    # ... and in each later one (warm start)
    eval_episodes: int = MISSING   # set by the scale
    nash_iters: int = MISSING      # rounds of iterated best response for the Nash reference (set by the scale)


@dataclass
class IncentiveConf:
    # The stage-2 method: a Hydra config group with `_target_` (conf/incentive/method/<name>.yaml).
    method: Any = field(default_factory=lambda: {"_target_": "edgeai_repro.incentive.policies.Learned", "name": "asosa"})
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


ConfigStore.instance().store(group="incentive", name="schema", node=IncentiveConf)


def _range(key: str, value, low: float = 0.0, strict: bool = False) -> None:
    ok = len(value) == 2 and value[0] <= value[1] and (value[0] > low if strict else value[0] >= low)
    require(ok, f"incentive.{key}={list(value)} must be [low, high] with {'0 < ' if strict else '0 <= '}low <= high.")


def validate(cfg: DictConfig) -> None:
    require(cfg.trainer.accelerator == "cpu" and cfg.trainer.devices in (1, "1"),
            f"trainer accelerator={cfg.trainer.accelerator}, devices={cfg.trainer.devices} does not apply to the "
            "incentive tasks: their networks are small and run on one CPU thread per cell; use trainer=cpu.")
    require(str(cfg.trainer.precision) in {"32-true", "32"},
            f"trainer.precision={cfg.trainer.precision} does not apply to the incentive tasks: their small networks "
            "train in fp32; use trainer.precision=32-true.")
    c = cfg.incentive
    require(isinstance(c.method, DictConfig) and "_target_" in c.method and "name" in c.method,
            "incentive.method has no _target_ and name; pick a method with incentive/method=<name> "
            "(one YAML per method in conf/incentive/method/).")
    require(int(cfg.seed) not in set(c.tuning_seeds),
            f"seed={cfg.seed} is one of incentive.tuning_seeds={list(c.tuning_seeds)}, where the hyper-parameters were "
            "tuned; evaluate on other seeds (or set incentive.tuning_seeds=[] for a tuning run).")
    require(c.lmos >= 2, f"incentive.lmos={c.lmos} must be at least 2 (zero or one LMO has no Stackelberg game).")
    _range("cost.unit", c.cost.unit, strict=True)
    _range("cost.fixed", c.cost.fixed)
    require(min(c.lam, c.alpha, c.beta) > 0, "incentive.lam, incentive.alpha and incentive.beta must be positive.")
    require(c.lam * c.alpha * c.beta * (c.lmos - 1) > c.lmos * c.cost.unit[1] or c.allow_dropout,
            f"incentive.lam*alpha*beta*(lmos-1) = {c.lam * c.alpha * c.beta * (c.lmos - 1):g} does not exceed the largest "
            f"possible sum of unit costs ({c.lmos * c.cost.unit[1]:g}); raise incentive.lam or set incentive.allow_dropout=true.")
    require(c.lam * c.alpha * c.beta > 2 * c.cost.unit[0],
            f"incentive.lam*alpha*beta = {c.lam * c.alpha * c.beta:g} is too small for even two of the cheapest LMOs to "
            "be paid; raise incentive.lam.")
    e = c.env
    require(e.workers >= 1 and e.horizon >= 1, "incentive.env.workers and incentive.env.horizon must be positive.")
    require(e.theta >= 0, f"incentive.env.theta={e.theta} must not be negative.")
    _range("env.worker_cost", e.worker_cost, strict=True)
    _range("env.participation_cost", e.participation_cost)
    require(e.worker_model in {"quantal", "adaptive", "learning"},
            f"incentive.env.worker_model={e.worker_model!r} is unknown; use quantal, adaptive or learning.")
    require(e.coupling in {"shared", "private"}, f"incentive.env.coupling={e.coupling!r} is unknown; use shared or private.")
    require(e.choice_temperature > 0 and e.switching_cost >= 0,
            "incentive.env needs choice_temperature > 0 and switching_cost >= 0.")
    require(e.cost_drift >= 0 and e.max_price > 0, "incentive.env.cost_drift must be >= 0 and max_price > 0.")
    p = c.policy
    require(p.algorithm in {"maddpg", "td3"}, f"incentive.policy.algorithm={p.algorithm!r} is unknown; use maddpg or td3.")
    require(p.critic in {"centralized", "independent"},
            f"incentive.policy.critic={p.critic!r} is unknown; use centralized or independent.")
    require(p.batch_size >= 1 and p.buffer_size >= p.batch_size, "incentive.policy.buffer_size must be >= batch_size >= 1.")
    a = c.asosa
    require(a.max_iters >= 1 and a.tol > 0 and 0 < a.damping <= 1,
            "incentive.asosa needs max_iters >= 1, tol > 0 and damping in (0, 1].")


