"""ASOSA: the outer loop that couples stage 1 (Stackelberg) and stage 2 (the LMO-worker game).

Each iteration: solve stage 1 with the current unit costs P; train (warm-started) or apply the
stage-2 method; evaluate it on fixed evaluation episodes; measure the unit cost each LMO really
paid its workers, P_hat = paid / collected. The fixed-point residual max_m |P_hat_m - P_m| / P_m
says how far P is from being consistent with stage 2; ASOSA has converged when it is below `tol`
(not when the damped step is small, which the decaying step size would force by itself). Until
then P moves toward P_hat with a decaying step eta_k = damping / (1 + decay k). The method is
judged on the game of its last iteration (the one ASOSA's loop delivers): its utilities, each
LMO's gap to the references of that game (references.py) and the joint policy's exploitability,
on that game's evaluation episodes; the per-iteration curves keep the path to it. The steps, the
damping and the stopping rule are our reconstruction (docs/incentive.md).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgeai_repro.core.seeding import derive_seed, generator
from edgeai_repro.core.trainer import Trainers
from edgeai_repro.incentive import policies, references
from edgeai_repro.incentive.config import Feedback, IncentiveConf
from edgeai_repro.incentive.env import IncentiveEnv, World
from edgeai_repro.incentive.episodes import Behaviour, Outcome, evaluate, path_behaviour
from edgeai_repro.incentive.stackelberg import Equilibrium, solve


@dataclass
class Learner:
    """A MADDPG/TD3 policy kept across ASOSA iterations (warm start)."""

    c: IncentiveConf
    method: policies.Learned
    seed: int
    trainers: Trainers
    module: object = None
    average: object = None  # the averaged policy (asosa.average_policy)
    buffer: object = None  # with asosa.warm_replay: one replay buffer for the whole run
    returns: list[float] = field(default_factory=list)

    def train(self, env: IncentiveEnv, updates: int, iteration: int) -> Behaviour:
        from edgeai_repro.incentive.maddpg import MADDPG, ReplayBuffer, actions_of

        pconf = type(self.c.policy)(
            **{**vars(self.c.policy), "algorithm": self.method.algorithm, "critic": self.method.critic}
        )
        # Learning sees each LMO's reward in units of its round budget (dropped-out LMOs: the mean one).
        budget = env.rewards.float() / env.conf.horizon
        scale = torch.where(budget > 0, budget, budget[budget > 0].mean() if (budget > 0).any() else 1.0)
        if self.module is None:
            torch.manual_seed(derive_seed("incentive-policy", self.seed))
            self.module = MADDPG(env.n_agents, pconf, reward_scale=scale)
            self.module.keep_optimizer_state = self.c.asosa.warm_replay
        else:
            self.module.reward_scale.copy_(scale)
        if self.buffer is not None:
            # asosa.warm_replay: the next game's transitions join the same replay buffer (a ring: the
            # oldest games' leave first), the Adam moments carry over (MADDPG.keep_optimizer_state),
            # and there is no second warm-up at the initial exploration noise.
            self.module.attach(env, self.buffer, self.buffer.gen)
        else:
            gen = generator(derive_seed("incentive-buffer", self.seed, iteration))
            buffer = ReplayBuffer(pconf.buffer_size, env.n_agents, pconf.batch_size, gen)
            self.module.attach(env, buffer, gen)
            # Fill the fresh buffer: random actions the first time; afterwards the warm-started policy
            # (random transitions would drag a trained critic back toward a bad policy).
            self.module.collect(
                max(1, pconf.warmup // env.batch), noise=None if iteration == 0 else pconf.explore_std
            )
            if self.c.asosa.warm_replay:
                self.buffer = buffer
        start = len(self.module.episode_returns)
        self.trainers.fit(self.module, batches=updates, log_every_n_steps=min(25, updates))
        self.returns.extend(self.module.episode_returns[start:])
        actor = self.module.actor
        if self.c.asosa.average_policy:
            # Iterate averaging: the policy played is the running mean of the actors' weights after
            # each outer iteration (the trained module keeps learning from its own weights).
            if self.average is None:
                self.average = copy.deepcopy(actor).requires_grad_(False)
            else:
                with torch.no_grad():
                    for avg, now in zip(self.average.parameters(), actor.parameters(), strict=True):
                        avg.lerp_(now, 1.0 / (iteration + 1))
            actor = self.average
        # The behaviour keeps gradients (evaluation turns them off): an LMO's best response is
        # found through the other LMOs' reactions to it.
        return lambda env, obs: actions_of(actor, obs)


def _gaps(mine: np.ndarray, reference: np.ndarray, rewards: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Each LMO's shortfall from its reference utility, in % of its stage-1 reward B_m (its utility
    near equilibrium can be ~0, a meaningless denominator): the share of its reward it leaves on the
    table. NaN for LMOs that dropped out in stage 1."""
    return np.where(active, 100 * (reference - mine) / np.maximum(rewards, 1e-12), np.nan)


def feedback(c: IncentiveConf, outcome: Outcome, eq: Equilibrium, P: np.ndarray) -> np.ndarray:
    """P_hat: the unit costs that stage 2's outcome says stage 1 should use (P itself for LMOs that
    dropped out or where nothing was measured).

    unit_cost (default): the average price paid, paid / collected. Where no LMO's quota binds, the
    per-round Nash price is v/2 whatever the workers cost, so mean P_hat / mean P = M / (2 (M - 1))
    and P shrinks geometrically: no fixed point on the default world (issue 38). delivery:
    P_hat = P x target / delivered: an LMO whose workers deliver less than its stage-1 target found
    data dearer than P (more, cheaper), so P rises until stage 2 delivers what stage 1 asks for
    (raising P lowers the targets and raises the value of data, and with it the delivery)."""
    if c.asosa.feedback == Feedback.delivery:
        delivered = np.maximum(outcome.collected, 1e-12 * np.maximum(eq.zeta, 1e-300))
        measured = P * eq.zeta / delivered
    else:
        measured = outcome.unit_cost
    return np.where(eq.active & np.isfinite(measured), measured, P)


def step(P: np.ndarray, measured: np.ndarray, eta: float, max_step: float | None) -> np.ndarray:
    """P moved eta of the way to P_hat; with max_step, each LMO by at most a factor 1 + max_step
    either way, so that one noisy measurement (P_hat = 15 P was seen) cannot drop an LMO for good."""
    moved = np.maximum(P + eta * (measured - P), 1e-6)
    return moved if max_step is None else np.clip(moved, P / (1 + max_step), P * (1 + max_step))


def run(
    c: IncentiveConf,
    seed: int,
    trainers: Trainers | None = None,
    checkpoint_dir: Path | None = None,
    progress: Callable[[str], None] = lambda s: None,
    store: Path | None = None,
    measure: Callable[[int, np.ndarray], None] = lambda k, ratio: None,
) -> dict:
    """One ASOSA run (or a baseline) for one seed; returns the result record and the curves.
    `measure(k, ratio)` sees each iteration's P_hat / P per LMO (NaN for dropped LMOs)."""
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
    eval_seed = derive_seed("incentive-env", seed, "eval")
    curves, converged, residual = [], False, float("nan")
    first: Outcome | None = None
    for k in range(iters):
        eq = solve(P, E, c.lam, c.alpha, c.beta, c.allow_dropout)
        eval_env = IncentiveEnv(
            c.env, eq.zeta, eq.rewards, world, batch=c.asosa.eval_episodes, seed=eval_seed
        )
        ref = None
        if learner is not None:
            updates = c.asosa.updates_first if k == 0 else c.asosa.updates_warm
            train_env = IncentiveEnv(
                c.env,
                eq.zeta,
                eq.rewards,
                world,
                batch=c.policy.envs,
                seed=derive_seed("incentive-env", seed, k),
            )
            behaviour = learner.train(train_env, updates, k)
        elif isinstance(method, policies.Equilibrium):
            # The reference itself: the LMOs play the per-round Nash offers of the game on these episodes.
            ref = references.references(eval_env, c, E, eq, world, store)
            behaviour = path_behaviour(ref["path"])
        else:
            ctx.P = P
            behaviour = method.behaviour(ctx)
        outcome = evaluate(eval_env, behaviour, E, c)
        first = first or outcome
        measured = feedback(c, outcome, eq, P)
        residual = float(np.max(np.abs(measured - P) / P))  # how far P is from what stage 2 implies
        measure(k, np.where(eq.active, measured / P, np.nan))
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
        if not c.asosa.freeze_stage1:
            eta = c.asosa.damping / (1 + c.asosa.decay * k)
            P = step(P, measured, eta, c.asosa.max_step)
    assert first is not None
    # The method is judged on the game of its last iteration, the game its loop delivers (for a
    # method without ASOSA's loop, the first and only one), on that game's evaluation episodes.
    ref = ref or references.references(eval_env, c, E, eq, world, store)
    record = {"method": method.name, **judged(c, eq, outcome, ref, eval_env.n_workers)}
    if c.asosa.exploitability and method.exploitable:
        if learner is not None:
            learner.module.requires_grad_(False)  # gradients flow through the policies, not into them
        gains = references.exploitability(eval_env, behaviour, c, E, eq.rewards)
        record["exploitability_pct"] = float(np.nanmax(gains))
        record.update({f"exploit_lmo{i + 1}_pct": float(g) for i, g in enumerate(gains)})
    record.update(
        iterations=k + 1,
        converged=float(converged or iters == 1),
        fixed_point_residual=residual,
        first_game_tp_utility=first.tp,
        first_game_total_utility=first.total,
    )
    if learner is not None:
        curves += [
            {"curve": "episode_return", "step": i + 1, "value": r} for i, r in enumerate(learner.returns)
        ]
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            torch.save(learner.module.state_dict(), checkpoint_dir / "policy.pt")
    return {
        "records": [record],
        "curves": [{"method": method.name, **r} for r in curves],
        "notes": [references.note(c)],
    }


def judged(c: IncentiveConf, eq: Equilibrium, outcome: Outcome, ref: dict, n_workers: int) -> dict:
    """The method's utilities on a game and its gaps to that game's references (per LMO and together)."""
    active = eq.active
    rewards = eq.rewards
    gaps = _gaps(outcome.lmo, ref["lmo_ne"], rewards, active)
    out = {
        "tp_utility": outcome.tp,
        "lmo_utility": float(outcome.lmo[active].mean()),
        "worker_utility": outcome.workers / n_workers,
        "total_utility": outcome.total,
        "data": outcome.data,
        "lmo_utility_ne": float(ref["lmo_ne"][active].mean()),
        "nash_gap_pct": float(100 * (ref["lmo_ne"] - outcome.lmo)[active].sum() / rewards[active].sum()),
        "nash_gap_worst_lmo_pct": float(np.nanmax(gaps)),
        **{f"gap_lmo{i + 1}_pct": float(g) for i, g in enumerate(gaps)},
        "welfare_opt": ref["welfare_opt"],
        "welfare_gap_pct": float(
            100 * (ref["welfare_opt"] - outcome.total) / max(abs(ref["welfare_opt"]), 1e-12)
        ),
        "ne_exploitability": float(ref["exploitability"]),
        "ne_converged": float(ref["ne_converged"]),
    }
    if "lmo_olbr" in ref:
        ol = _gaps(outcome.lmo, ref["lmo_olbr"], rewards, active)
        out.update(
            lmo_utility_olbr=float(ref["lmo_olbr"][active].mean()),
            olbr_gap_pct=float(100 * (ref["lmo_olbr"] - outcome.lmo)[active].sum() / rewards[active].sum()),
            olbr_gap_worst_lmo_pct=float(np.nanmax(ol)),
            ref_exploitability_pct=float(ref["ref_exploitability_pct"]),
        )
    return out
