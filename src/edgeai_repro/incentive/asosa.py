"""ASOSA: the outer loop that couples stage 1 (Stackelberg) and stage 2 (the LMO-worker game).

Each iteration: solve stage 1 with the current unit costs P; train (warm-started) or apply the
stage-2 method; evaluate it on fixed evaluation episodes; measure the unit cost each LMO really
paid its workers, P_hat = paid / collected. The fixed-point residual max_m |P_hat_m - P_m| / P_m
says how far P is from being consistent with stage 2; ASOSA has converged when it is below `tol`
(not when the damped step is small, which the decaying step size would force by itself). Until
then P moves toward P_hat with a decaying step eta_k = damping / (1 + decay k). At the end the
method is compared with the exact references of the last iteration's game (incentive/game.py):
each LMO's Nash-equilibrium utility and the welfare optimum, on the same evaluation workers.
The steps, the damping and the stopping rule are our reconstruction (README).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgeai_repro.core import cache
from edgeai_repro.core.files import atomic_write_json
from edgeai_repro.core.seeding import derive_seed, generator
from edgeai_repro.core.trainer import Trainers
from edgeai_repro.incentive import game, policies
from edgeai_repro.incentive.config import IncentiveConf
from edgeai_repro.incentive.env import IncentiveEnv, World
from edgeai_repro.incentive.stackelberg import Equilibrium, solve, tp_utility

Behaviour = policies.Behaviour


@dataclass
class Outcome:
    """Realised utilities of one evaluation (means over the evaluation episodes)."""

    tp: float
    lmo: np.ndarray  # (M,) each LMO's utility (stage-2 income - payments - E_m)
    workers: float  # all workers together
    data: float
    unit_cost: np.ndarray  # (M,) paid / collected, NaN where nothing was collected

    @property
    def total(self) -> float:
        return self.tp + float(self.lmo.sum()) + self.workers


def evaluate(
    env: IncentiveEnv, behaviour: Behaviour, eq: Equilibrium, E: np.ndarray, c: IncentiveConf
) -> Outcome:
    obs = env.reset_batch()
    for _ in range(env.conf.horizon):
        obs, _, _done, _ = env.step_batch(behaviour(env, obs))
    tot = {k: v.numpy() for k, v in env.episode_totals().items()}
    credited = tot["credited"].sum(-1)  # per episode
    tp = np.mean(
        [tp_utility(paid, z, c.lam, c.alpha, c.beta) for paid, z in zip(tot["income"].sum(-1), credited)]
    )
    lmo = (tot["lmo_utility"] - np.where(eq.active, E, 0.0)).mean(0)
    collected = tot["collected"].sum(0)
    unit = np.where(collected > 0, tot["paid"].sum(0) / np.maximum(collected, 1e-300), np.nan)
    return Outcome(float(tp), lmo, float(tot["worker_welfare"].sum(-1).mean()), float(credited.mean()), unit)


@dataclass
class Learner:
    """A MADDPG/TD3 policy kept across ASOSA iterations (warm start)."""

    c: IncentiveConf
    method: policies.Learned
    seed: int
    trainers: Trainers
    module: object = None
    returns: list[float] = field(default_factory=list)

    def train(self, env: IncentiveEnv, updates: int, iteration: int) -> Behaviour:
        from edgeai_repro.incentive.maddpg import MADDPG, ReplayBuffer

        pconf = type(self.c.policy)(
            **{**vars(self.c.policy), "algorithm": self.method.algorithm, "critic": self.method.critic}
        )
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
        self.module.collect(
            max(1, pconf.warmup // env.batch), noise=None if iteration == 0 else pconf.explore_std
        )
        start = len(self.module.episode_returns)
        self.trainers.fit(self.module, steps=updates, log_every_n_steps=25)
        self.returns.extend(self.module.episode_returns[start:])
        module = self.module
        return lambda env, obs: module.act(obs, 0.0)


REFERENCES = cache.get("incentive/references")


def references(
    env: IncentiveEnv,
    c: IncentiveConf,
    E: np.ndarray,
    eq: Equilibrium,
    store: Path | None = None,
    env_seed: int | None = None,
) -> dict:
    """A game's exact references, as episode utilities, on the workers of `env`'s first reset: pass a
    fresh evaluation environment, so that they are the workers the evaluation episodes meet.

    They depend on the game (stage-1 solution, environment settings, evaluation workers), not on
    the method, so every method of a seed shares them: with `store` (the cell store's root) they are
    stored once in the cache "incentive/references", keyed by everything they depend on, and read
    back by the other cells (a tenth of the cost of incentive/baselines)."""
    path = None
    if store is not None and env_seed is not None:
        key = {
            "env": asdict(c.env),
            "env_seed": env_seed,
            "lam": c.lam,
            "alpha": c.alpha,
            "beta": c.beta,
            "nash_iters": c.asosa.nash_iters,
            "episodes": c.asosa.eval_episodes,
            "zeta": eq.zeta.tolist(),
            "rewards": eq.rewards.tolist(),
            "E": E.tolist(),
        }
        path = REFERENCES.path(store, key, ".json")
        r = REFERENCES.read(path, lambda p: json.loads(p.read_text()))
        if r is not None and {"lmo_ne", "actions"} <= set(r):
            return {
                **r,
                "lmo_ne": np.asarray(r["lmo_ne"]),
                "actions": torch.tensor(r["actions"], dtype=torch.float64),
            }
    workers = game.Workers.of(env)
    ne = game.nash(env, workers, max_iters=c.asosa.nash_iters)
    h, active = env.conf.horizon, eq.active
    lmo_ne = h * ne.utility - np.where(active, E, 0.0)
    starts = [ne.actions, torch.full_like(ne.actions, 0.5), torch.zeros_like(ne.actions)]
    _, welfare = game.welfare_optimum(env, workers, c.lam, c.alpha, c.beta, starts)
    welfare -= float(np.where(active, E, 0.0).sum())
    out = {
        "lmo_ne": lmo_ne,
        "exploitability": ne.exploitability,
        "ne_converged": ne.converged,
        "ne_iterations": ne.iterations,
        "welfare_opt": welfare,
        "actions": ne.actions,
    }
    if path is not None:
        atomic_write_json(
            path,
            {
                **out,
                "lmo_ne": lmo_ne.tolist(),
                "actions": ne.actions.tolist(),
                "ne_converged": bool(ne.converged),
                "key": {**key, "version": REFERENCES.version},
            },
        )
    return out


def run(
    c: IncentiveConf,
    seed: int,
    trainers: Trainers | None = None,
    checkpoint_dir: Path | None = None,
    progress: Callable[[str], None] = lambda s: None,
    store: Path | None = None,
) -> dict:
    """One ASOSA run (or a baseline) for one seed; returns the result record and the curves."""
    trainers = trainers if trainers is not None else Trainers()
    method = policies.build(c.method)
    rng = np.random.default_rng(derive_seed("incentive-instance", seed))
    P = rng.uniform(*c.cost.unit, size=c.lmos)
    E = rng.uniform(*c.cost.fixed, size=c.lmos)
    eq0 = solve(P, E, c.lam, c.alpha, c.beta, c.allow_dropout)
    world = World.from_equilibrium(c.env, eq0.zeta, eq0.rewards)
    learner = Learner(c, method, seed, trainers) if method.learned else None
    ctx = policies.Context(P, seed, generator(derive_seed("incentive-random", seed)))
    iters = c.asosa.max_iters if method.outer_loop else 1
    curves, converged, outcome, residual, eval_env = [], False, None, float("nan"), None
    common = None  # (outcome, references, stage-1 solution) on the first game, which every method shares
    for k in range(iters):
        eq = solve(P, E, c.lam, c.alpha, c.beta, c.allow_dropout)
        make = lambda batch, tag, eq=eq: IncentiveEnv(
            c.env, eq.zeta, eq.rewards, world, batch=batch, seed=derive_seed("incentive-env", seed, tag)
        )
        eval_env = make(c.asosa.eval_episodes, "eval")
        playing_nash = isinstance(method, policies.Equilibrium)
        ref = (
            references(
                make(c.asosa.eval_episodes, "eval"),
                c,
                E,
                eq,
                store,
                derive_seed("incentive-env", seed, "eval"),
            )
            if k == 0 or playing_nash
            else None
        )
        if learner is not None:
            updates = c.asosa.updates_first if k == 0 else c.asosa.updates_warm
            behaviour = learner.train(make(c.policy.envs, k), updates, k)
        elif playing_nash:
            behaviour = lambda env, obs, a=ref["actions"]: (
                a.float().unsqueeze(0).expand(obs.shape[0], -1, -1).clone()
            )
        else:
            ctx.P = P
            behaviour = method.behaviour(ctx)
        outcome = evaluate(eval_env, behaviour, eq, E, c)
        if k == 0:
            common = (outcome, ref, eq, eval_env.n_workers)
        measured = np.where(eq.active & np.isfinite(outcome.unit_cost), outcome.unit_cost, P)
        residual = float(np.max(np.abs(measured - P) / P))  # how far P is from what stage 2 really costs
        curves += [
            {"curve": name, "step": k + 1, "value": float(v)}
            for name, v in (
                ("tp_utility", outcome.tp),
                ("lmo_utility", outcome.lmo[eq.active].mean()),
                ("worker_utility", outcome.workers / eval_env.n_workers),
                ("total_utility", outcome.total),
                ("stage1_tp_utility", eq.tp_utility),
                ("tau", eq.tau),
                ("mean_unit_cost", float(P.mean())),
                ("fixed_point_residual", residual),
            )
        ]
        trainers.log({f"asosa/{r['curve']}": r["value"] for r in curves[-8:]})
        progress(f"iteration {k + 1}: TP {outcome.tp:.3f}, fixed-point residual {residual:.2e}")
        converged = residual < c.asosa.tol
        if converged or k == iters - 1:
            break
        eta = c.asosa.damping / (1 + c.asosa.decay * k)
        P = np.maximum(P + eta * (measured - P), 1e-6)
    assert outcome is not None and common is not None
    # Every party's utility and the gaps to the references are measured on the first stage-1 game
    # and the same evaluation episodes for every method (the seed fixes both); ASOSA's later games
    # differ by method, so only the convergence figures come from the last iteration.
    first, ref, eq0, n_workers = common
    active = eq0.active
    lmo_ne = ref["lmo_ne"][active]
    mine = first.lmo[active]
    if learner is not None:
        curves += [
            {"curve": "episode_return", "step": i + 1, "value": r} for i, r in enumerate(learner.returns)
        ]
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            torch.save(learner.module.state_dict(), checkpoint_dir / "policy.pt")
    record = {
        "method": method.name,
        "tp_utility": first.tp,
        "lmo_utility": float(mine.mean()),
        "worker_utility": first.workers / n_workers,
        "total_utility": first.total,
        "data": first.data,
        "lmo_utility_ne": float(lmo_ne.mean()),
        # Gaps in % of the LMOs' stage-1 rewards B_m (their utilities near equilibrium can be ~0, a
        # meaningless denominator): the share of its reward an LMO leaves on the table.
        "nash_gap_pct": float(100 * (lmo_ne - mine).sum() / eq0.rewards[active].sum()),
        "nash_gap_worst_lmo_pct": float(100 * np.max((lmo_ne - mine) / eq0.rewards[active])),
        "welfare_opt": ref["welfare_opt"],
        "welfare_gap_pct": float(
            100 * (ref["welfare_opt"] - first.total) / max(abs(ref["welfare_opt"]), 1e-12)
        ),
        "ne_exploitability": ref["exploitability"],
        "ne_converged": float(ref["ne_converged"]),
        "iterations": k + 1,
        "converged": float(converged or iters == 1),
        "fixed_point_residual": residual,
        "final_tp_utility": outcome.tp,
        "final_total_utility": outcome.total,
    }
    return {"records": [record], "curves": [{"method": method.name, **r} for r in curves]}
