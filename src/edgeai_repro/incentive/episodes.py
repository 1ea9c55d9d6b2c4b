"""Playing the evaluation episodes: a method's outcome, offer paths, and deviations from a joint policy.

Every figure of a method (its utilities, its gaps to the references, its exploitability) is measured
on the same episodes: the evaluation environment's `restart()` replays the seed's workers and cost
drift. The parties' utilities are computed in one place (`parties`) from the episode totals, so a
reference path scores exactly as a method that plays it would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from edgeai_repro.incentive.config import IncentiveConf
from edgeai_repro.incentive.env import ACT_DIM, IncentiveEnv

Behaviour = Callable[[IncentiveEnv, torch.Tensor], torch.Tensor]


@dataclass
class Outcome:
    """Realised utilities of one evaluation (means over the evaluation episodes)."""

    tp: float
    lmo: np.ndarray  # (M,) each LMO's utility (stage-2 income - payments - E_m)
    workers: float  # all workers together
    data: float
    unit_cost: np.ndarray  # (M,) paid / collected, NaN where nothing was collected
    collected: np.ndarray  # (M,) data each LMO's workers delivered in an episode (all rounds)
    payoff: (
        np.ndarray
    )  # (M,) what each LMO maximises: its reward (utility + welfare_weight x its workers' surplus)

    @property
    def total(self) -> float:
        return self.tp + float(self.lmo.sum()) + self.workers


def parties(
    totals: dict[str, torch.Tensor], c: IncentiveConf, fixed: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per copy (..., E): the TP's utility lambda g(credited) - income, the LMOs' utilities (..., E, M)
    (less their fixed costs `fixed`, 0 for dropped LMOs), the workers' surplus and the total; and each
    LMO's payoff (its reward). Differentiable in the totals."""
    income, credited = totals["income"], totals["credited"].sum(-1)
    tp = c.lam * c.alpha * torch.log1p(c.beta * credited) - income.sum(-1)
    lmo = totals["lmo_utility"] - fixed
    workers = totals["worker_welfare"].sum(-1)
    payoff = totals["lmo_utility"] + c.env.welfare_weight * totals["worker_welfare"]
    return {"tp": tp, "lmo": lmo, "workers": workers, "total": tp + lmo.sum(-1) + workers, "payoff": payoff}


def fixed_costs(env: IncentiveEnv, E: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.where(env.active.numpy(), E, 0.0), dtype=torch.float64)


def evaluate(env: IncentiveEnv, behaviour: Behaviour, E: np.ndarray, c: IncentiveConf) -> Outcome:
    """Play the seed's evaluation episodes with `behaviour` (no gradients) and measure every party."""
    with torch.no_grad():
        obs = env.restart()
        for _ in range(env.conf.horizon):
            obs, _, _done, _ = env.step_batch(behaviour(env, obs))
        totals = env.episode_totals()
        p = parties(totals, c, fixed_costs(env, E))
    collected = totals["collected"].sum(0).numpy()
    unit = np.where(collected > 0, totals["paid"].sum(0).numpy() / np.maximum(collected, 1e-300), np.nan)
    return Outcome(
        tp=float(p["tp"].mean()),
        lmo=p["lmo"].mean(0).numpy(),
        workers=float(p["workers"].mean()),
        data=float(totals["credited"].sum(-1).mean()),
        unit_cost=unit,
        collected=collected / env.batch,
        payoff=p["payoff"].mean(0).numpy(),
    )


def path_behaviour(path: torch.Tensor) -> Behaviour:
    """Play the joint offers path[t] (H, M, 2) in round t of every copy (an open-loop strategy)."""
    return lambda env, obs: path[env.t].to(obs.dtype).unsqueeze(0).expand(obs.shape[0], -1, -1)


def rollout(
    env: IncentiveEnv,
    behaviour: Behaviour | None,
    override: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Play the seed's episodes in R replicas side by side; in replica r the LMOs that mask[r] (R, M)
    selects play override[r, t] (R, H, M, 2) in round t, the others follow `behaviour` (None: they too
    play override). Differentiable in `override` (and through the others' reactions when `behaviour`
    is). Returns the episode totals, each (R, E, M)."""
    obs = env.restart()
    r = 1 if override is None else override.shape[0]
    if r > 1:
        obs = env.tile(r)
    e = env.batch // r
    for t in range(env.conf.horizon):
        if behaviour is None:
            assert override is not None
            action = override[:, t].repeat_interleave(e, 0)
        else:
            action = behaviour(env, obs).double()
            if override is not None:
                chosen = (mask if mask is not None else torch.ones(r, env.n_agents, dtype=torch.bool)).view(
                    r, 1, -1, 1
                )
                mine = override[:, t].unsqueeze(1).expand(r, e, env.n_agents, ACT_DIM)
                action = torch.where(chosen, mine, action.view(r, e, env.n_agents, ACT_DIM)).reshape(
                    r * e, -1, ACT_DIM
                )
        obs, _, _done, _ = env.step_batch(action)
    return {k: v.view(r, e, -1) for k, v in env.episode_totals().items()}


def realised_path(env: IncentiveEnv, behaviour: Behaviour) -> torch.Tensor:
    """The joint offers (H, M, 2) a behaviour posts in each round, averaged over the episodes."""
    path = []
    with torch.no_grad():
        obs = env.restart()
        for _ in range(env.conf.horizon):
            action = behaviour(env, obs).double()
            path.append(action.clamp(0, 1).mean(0))
            obs, _, _done, _ = env.step_batch(action)
    return torch.stack(path)
