"""ASOSA: the outer loop that couples stage 1 (Stackelberg) and stage 2 (the LMO-worker MDP).

Each iteration: solve stage 1 with the current unit costs P; train (warm-started) or apply the
stage-2 behaviour; evaluate it on fixed evaluation episodes; measure the unit cost each LMO really
paid its workers, P_hat = paid / collected; move P toward P_hat with a decaying step
eta_k = damping / (1 + decay k); stop when P and the TP's utility change by less than tol.
The steps, the damping and the stopping rule are our reconstruction (README).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgeai_repro.core.seeding import derive_seed, generator
from edgeai_repro.core.trainer import Trainers
from edgeai_repro.incentive import policies
from edgeai_repro.incentive.config import LEARNED, IncentiveConf
from edgeai_repro.incentive.env import IncentiveEnv, World
from edgeai_repro.incentive.maddpg import MADDPG, ReplayBuffer
from edgeai_repro.incentive.stackelberg import Equilibrium, solve, tp_utility

Behaviour = Callable[[IncentiveEnv, torch.Tensor], torch.Tensor]


@dataclass
class Outcome:
    """Realised utilities of one evaluation (means over the evaluation episodes)."""

    tp: float
    lmo: float
    workers: float
    data: float
    unit_cost: np.ndarray   # (M,) paid / collected, NaN where nothing was collected

    @property
    def total(self) -> float:
        return self.tp + self.lmo + self.workers


def evaluate(env: IncentiveEnv, behaviour: Behaviour, eq: Equilibrium, E: np.ndarray, c: IncentiveConf) -> Outcome:
    obs = env.reset_batch()
    for _ in range(env.conf.horizon):
        obs, _, done, _ = env.step_batch(behaviour(env, obs))
    tot = {k: v.numpy() for k, v in env.episode_totals().items()}
    credited = tot["credited"].sum(-1)                        # per episode
    tp = np.mean([tp_utility(paid, z, c.lam, c.alpha, c.beta) for paid, z in zip(tot["income"].sum(-1), credited)])
    lmo = float((tot["lmo_utility"] - np.where(eq.active, E, 0.0)).sum(-1).mean())
    collected = tot["collected"].sum(0)
    unit = np.where(collected > 0, tot["paid"].sum(0) / np.maximum(collected, 1e-300), np.nan)
    return Outcome(float(tp), lmo, float(tot["worker_welfare"].sum(-1).mean()), float(credited.mean()), unit)


@dataclass
class Learner:
    """A MADDPG/TD3 policy kept across ASOSA iterations (warm start)."""

    c: IncentiveConf
    seed: int
    trainers: Trainers
    module: MADDPG | None = None
    returns: list[float] = field(default_factory=list)

    def train(self, env: IncentiveEnv, updates: int, iteration: int) -> Behaviour:
        algo, critic = LEARNED[self.c.method]
        pconf = type(self.c.policy)(**{**vars(self.c.policy), "algorithm": algo, "critic": critic})
        # Learning sees each LMO's reward in units of its round budget (dropped-out LMOs: the mean one).
        budget = env.rewards.float() / env.conf.horizon
        scale = torch.where(budget > 0, budget, budget[budget > 0].mean() if (budget > 0).any() else 1.0)
        if self.module is None:
            torch.manual_seed(derive_seed("incentive-policy", self.seed))
            self.module = MADDPG(env.n_agents, pconf, reward_scale=scale)
        else:
            self.module.reward_scale.copy_(scale)
        gen = generator(derive_seed("incentive-buffer", self.seed, iteration))
        self.module.attach(env, ReplayBuffer(pconf.buffer_size, env.n_agents, pconf.batch_size, gen), gen)
        # Fill the fresh buffer: random actions the first time; afterwards the warm-started policy
        # (random transitions would drag a trained critic back toward a bad policy).
        self.module.collect(max(1, pconf.warmup // env.batch), noise=None if iteration == 0 else pconf.explore_std)
        start = len(self.module.episode_returns)
        self.trainers.fit(self.module, steps=updates, log_every_n_steps=25)
        self.returns.extend(self.module.episode_returns[start:])
        module = self.module
        return lambda env, obs: module.act(obs, 0.0)


def behaviour_for(c: IncentiveConf, seed: int) -> Behaviour:
    gen = generator(derive_seed("incentive-random", seed))
    if c.method == "random":
        return lambda env, obs: policies.random_actions(env, obs, gen)
    if c.method == "fixed_share":
        return lambda env, obs: policies.fixed_share(env, obs, c.fixed_share, c.fixed_price)
    if c.method == "myopic":
        return lambda env, obs: policies.myopic(env, obs)
    raise ValueError(c.method)


def posted_cost(P: np.ndarray, c: IncentiveConf) -> Behaviour:
    """Stackelberg-only: workers are paid the stage-1 unit cost P_m per unit, no base reward."""

    def act(env: IncentiveEnv, obs: torch.Tensor) -> torch.Tensor:
        price = torch.as_tensor(P) / (env.conf.max_price * env.price_unit.clamp_min(1e-12))
        action = policies.fixed_share(env, obs, 0.0, 0.0)
        action[..., 1] = price.clamp(0, 1).float()
        return action

    return act


def run(c: IncentiveConf, seed: int, trainers: Trainers | None = None, checkpoint_dir: Path | None = None,
        progress: Callable[[str], None] = lambda s: None) -> dict:
    """One ASOSA run (or a baseline) for one seed; returns the result record and the curves."""
    trainers = trainers if trainers is not None else Trainers()
    rng = np.random.default_rng(derive_seed("incentive-instance", seed))
    P = rng.uniform(*c.cost.unit, size=c.lmos)
    E = rng.uniform(*c.cost.fixed, size=c.lmos)
    eq0 = solve(P, E, c.lam, c.alpha, c.beta, c.allow_dropout)
    world = World.from_equilibrium(c.env, eq0.zeta, eq0.rewards)
    learner = Learner(c, seed, trainers) if c.method in LEARNED else None
    iters = 1 if c.method in {"one_shot", "stackelberg_only"} else c.asosa.max_iters
    curves, prev_tp, converged, outcome, change = [], None, False, None, float("nan")
    for k in range(iters):
        eq = solve(P, E, c.lam, c.alpha, c.beta, c.allow_dropout)
        make = lambda batch, tag: IncentiveEnv(c.env, eq.zeta, eq.rewards, world, batch=batch,  # noqa: E731
                                               seed=derive_seed("incentive-env", seed, tag))
        if learner is not None:
            updates = c.asosa.updates_first if k == 0 else c.asosa.updates_warm
            behaviour = learner.train(make(c.policy.envs, k), updates, k)
        elif c.method == "stackelberg_only":
            behaviour = posted_cost(P, c)
        else:
            behaviour = behaviour_for(c, seed)
        outcome = evaluate(make(c.asosa.eval_episodes, "eval"), behaviour, eq, E, c)
        measured = np.where(eq.active & np.isfinite(outcome.unit_cost), outcome.unit_cost, P)
        eta = c.asosa.damping / (1 + c.asosa.decay * k)
        new_P = np.maximum(P + eta * (measured - P), 1e-6)
        change = float(np.max(np.abs(new_P - P) / P))
        tp_change = abs(outcome.tp - prev_tp) / max(abs(prev_tp), 1e-12) if prev_tp is not None else float("inf")
        curves += [{"curve": name, "step": k + 1, "value": float(v)} for name, v in (
            ("tp_utility", outcome.tp), ("lmo_utility", outcome.lmo), ("worker_utility", outcome.workers),
            ("total_utility", outcome.total), ("stage1_tp_utility", eq.tp_utility), ("tau", eq.tau),
            ("mean_unit_cost", float(P.mean())), ("p_change", change))]
        trainers.log({f"asosa/{r['curve']}": r["value"] for r in curves[-8:]})
        progress(f"iteration {k + 1}: TP {outcome.tp:.3f}, P change {change:.2e}")
        converged = change < c.asosa.tol and tp_change < c.asosa.tol
        prev_tp, P = outcome.tp, new_P
        if converged:
            break
    if learner is not None:
        curves += [{"curve": "episode_return", "step": i + 1, "value": r} for i, r in enumerate(learner.returns)]
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            torch.save(learner.module.state_dict(), checkpoint_dir / "policy.pt")
    assert outcome is not None
    record = {"method": c.method, "tp_utility": outcome.tp, "lmo_utility": outcome.lmo,
              "worker_utility": outcome.workers, "total_utility": outcome.total, "data": outcome.data,
              "iterations": k + 1, "converged": float(converged or iters == 1), "last_p_change": change}
    return {"records": [record], "curves": [{"method": c.method, **r} for r in curves]}
