"""Stage-2 behaviours that are not learned: the baselines' LMO policies."""
from __future__ import annotations

import torch

from edgeai_repro.incentive.env import ACT_DIM, IncentiveEnv


def random_actions(env: IncentiveEnv, obs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(obs.shape[0], env.n_agents, ACT_DIM, generator=gen)


def fixed_share(env: IncentiveEnv, obs: torch.Tensor, share: float, price: float) -> torch.Tensor:
    act = torch.empty(obs.shape[0], env.n_agents, ACT_DIM)
    act[..., 0], act[..., 1] = share, price
    return act


def myopic(env: IncentiveEnv, obs: torch.Tensor, grid: int = 11) -> torch.Tensor:
    """Each LMO picks, on a grid, the (share, price) with the best immediate reward, knowing its
    workers' current costs (full information, no look-ahead)."""
    levels = torch.linspace(0, 1, grid)
    best_val = torch.full((obs.shape[0], env.n_agents), -float("inf"), dtype=torch.float64)
    best = torch.zeros(obs.shape[0], env.n_agents, ACT_DIM)
    for share in levels:
        for price in levels:
            act = fixed_share(env, obs, float(share), float(price))
            val = env.preview(act)
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            best[better] = act[better]
    return best
