"""Stage 2: the LMO-worker interaction as a multi-agent environment (PettingZoo parallel API).

Every LMO is an agent. Each round it chooses a share rho in [0, 1] of its round budget to pass to
its workers as a base participation reward, R_base = theta * rho (the paper's
theta (1 - B~_m / B_m) with rho = 1 - B~_m / B_m), and a unit data price p. Each worker w has a
private quadratic cost c_w d^2 / 2 and a participation cost e_w: it joins when
R_base + p^2 / (2 c_w) >= e_w and supplies d = p / c_w (best response), or moves part of the way
there each round (adaptive workers). The LMO is paid by the TP in proportion to the data it
delivers up to its stage-1 target zeta_m*, so its reward per round is
(B_m / zeta_m*) x new data credited - what it paid workers [+ w x workers' welfare].
Costs may drift (log-normal random walk). All of this is our reconstruction (README).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from edgeai_repro.incentive.config import EnvConf

OBS_DIM = 6
ACT_DIM = 2


@dataclass(frozen=True)
class World:
    """Units fixed for a whole ASOSA run, from the first stage-1 solution.

    price_unit: the LMO's first value of a data unit v0 = B_m / zeta_m* (prices are
    action x max_price x v0, in absolute currency). cost_scale: c_w = kappa_w v0 T W / zeta0*, so at
    price v0 a worker with kappa = 1 supplies its 1/(T W) share of the first target per round.
    Holding both fixed makes workers' costs a property of the world, not of the current prices
    (otherwise ASOSA would chase its own tail).
    """

    price_unit: np.ndarray
    cost_scale: np.ndarray

    @classmethod
    def from_equilibrium(cls, conf: EnvConf, targets: np.ndarray, rewards: np.ndarray) -> "World":
        active = targets > 0
        fallback = rewards.sum() / max(targets.sum(), 1e-12)
        unit = np.where(active, rewards / np.where(active, targets, 1.0), fallback)
        target = np.where(active, targets, targets[active].mean() if active.any() else 1.0)
        return cls(price_unit=unit, cost_scale=unit * conf.horizon * conf.workers / target)


class IncentiveEnv:
    """Batched over `batch` independent copies (vectorised rollouts), PettingZoo-style API."""

    metadata = {"name": "hierarchical_incentive_v0", "render_modes": []}

    def __init__(self, conf: EnvConf, targets: np.ndarray, rewards: np.ndarray, world: "World",
                 batch: int = 1, seed: int = 0, device: str | torch.device = "cpu") -> None:
        self.conf, self.batch, self.device = conf, batch, torch.device(device)
        self.targets = torch.as_tensor(targets, dtype=torch.float64, device=self.device)   # (M,)
        self.rewards = torch.as_tensor(rewards, dtype=torch.float64, device=self.device)   # (M,) B_m
        self.n_agents = len(targets)
        self.possible_agents = [f"lmo_{m}" for m in range(self.n_agents)]
        self.agents: list[str] = []
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(seed)
        # value of one unit of data to the LMO, and its round budget per worker
        safe = torch.where(self.targets > 0, self.targets, torch.ones_like(self.targets))
        self.unit_value = torch.where(self.targets > 0, self.rewards / safe, torch.zeros_like(self.targets))
        self.round_budget = self.rewards / conf.horizon / conf.workers
        self.cost_scale = torch.as_tensor(world.cost_scale, dtype=torch.float64, device=self.device)
        self.price_unit = torch.as_tensor(world.price_unit, dtype=torch.float64, device=self.device)

    # -- spaces (gymnasium when available, so other algorithms can plug in) --
    def observation_space(self, agent: str):
        from gymnasium.spaces import Box

        return Box(low=-np.inf, high=np.inf, shape=(OBS_DIM,), dtype=np.float32)

    def action_space(self, agent: str):
        from gymnasium.spaces import Box

        return Box(low=0.0, high=1.0, shape=(ACT_DIM,), dtype=np.float32)

    def _uniform(self, lo_hi: tuple[float, float], shape: tuple[int, ...]) -> torch.Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(shape, generator=self.gen, device=self.device, dtype=torch.float64)

    def reset_batch(self) -> torch.Tensor:
        b, m, w = self.batch, self.n_agents, self.conf.workers
        self.t = 0
        self.cost = self._uniform(self.conf.worker_cost, (b, m, w)) * self.cost_scale.view(1, m, 1)
        self.entry = self._uniform(self.conf.participation_cost, (b, m, w)) * self.round_budget.view(1, m, 1)
        self.supply = torch.zeros(b, m, w, dtype=torch.float64, device=self.device)
        self.collected = torch.zeros(b, m, dtype=torch.float64, device=self.device)
        self.paid = torch.zeros(b, m, dtype=torch.float64, device=self.device)
        self.worker_welfare = torch.zeros(b, m, dtype=torch.float64, device=self.device)
        self.last = torch.zeros(b, m, 4, dtype=torch.float64, device=self.device)
        return self._obs()

    def _obs(self) -> torch.Tensor:
        progress = self.collected / self.targets.clamp_min(1e-12)
        time = torch.full_like(progress, self.t / self.conf.horizon)
        return torch.cat([progress.unsqueeze(-1), time.unsqueeze(-1), self.last], dim=-1).float()  # (B, M, OBS)

    def prices(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Share and absolute price; LMOs that dropped out in stage 1 (target 0) offer nothing."""
        active = (self.targets > 0).view(1, -1)
        rho = torch.where(active, action[..., 0].double().clamp(0, 1), 0.0)
        price = torch.where(active, action[..., 1].double().clamp(0, 1) * self.conf.max_price * self.price_unit.view(1, -1), 0.0)
        return rho, price

    def _round(self, action: torch.Tensor) -> dict[str, torch.Tensor]:
        """What one round with `action` would give, without changing the state."""
        conf = self.conf
        rho, price = self.prices(action)
        base = conf.theta * rho.unsqueeze(-1) * self.round_budget.view(1, -1, 1)          # R_base per worker
        p = price.unsqueeze(-1)
        best = p / self.cost
        supply = self.supply + conf.adapt_rate * (best - self.supply) if conf.worker_model == "adaptive" else best
        surplus = base + p * supply - self.cost * supply ** 2 / 2 - self.entry
        joins = surplus >= 0
        data = torch.where(joins, supply, torch.zeros_like(supply)).sum(-1)
        pay = torch.where(joins, base + p * supply, torch.zeros_like(supply)).sum(-1)
        welfare = torch.where(joins, surplus, torch.zeros_like(surplus)).sum(-1)
        credited = (torch.minimum(self.collected + data, self.targets) - torch.minimum(self.collected, self.targets))
        reward = self.unit_value * credited - pay + conf.welfare_weight * welfare
        return {"rho": rho, "supply": supply, "joins": joins, "data": data, "pay": pay, "welfare": welfare,
                "reward": reward}

    def preview(self, action: torch.Tensor) -> torch.Tensor:
        """Immediate reward (B, M) of `action` from the current state."""
        return self._round(action)["reward"]

    def step_batch(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool, dict[str, torch.Tensor]]:
        """action: (B, M, 2) in [0, 1]. Returns obs, reward (B, M), done, info."""
        conf = self.conf
        out = self._round(action)
        rho, joins, data, pay, welfare, reward = (out[k] for k in ("rho", "joins", "data", "pay", "welfare", "reward"))
        self.supply = out["supply"]
        self.collected = self.collected + data
        self.paid, self.worker_welfare = self.paid + pay, self.worker_welfare + welfare
        rate = joins.double().mean(-1)
        self.last = torch.stack([rho, action[..., 1].double(), rate,
                                 data / self.targets.clamp_min(1e-12) * conf.horizon], dim=-1)
        if conf.cost_drift > 0:
            noise = torch.randn(self.cost.shape, generator=self.gen, device=self.device, dtype=torch.float64)
            self.cost = self.cost * torch.exp(conf.cost_drift * noise)
        self.t += 1
        done = self.t >= conf.horizon
        info = {"data": data, "paid": pay, "welfare": welfare, "participation": rate}
        return self._obs(), reward.float(), done, info

    # -- PettingZoo ParallelEnv interface: one copy, numpy in and out --
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.gen.manual_seed(seed)
        self.batch = 1
        self.agents = list(self.possible_agents)
        obs = self.reset_batch()[0].numpy()
        return {a: obs[i] for i, a in enumerate(self.agents)}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        act = torch.tensor(np.stack([np.asarray(actions[a], dtype=np.float32) for a in self.possible_agents]))[None]
        obs, reward, done, info = self.step_batch(act)
        o, r = obs[0].numpy(), reward[0].numpy()
        agents = list(self.agents)
        if done:
            self.agents = []
        return ({a: o[i] for i, a in enumerate(agents)}, {a: float(r[i]) for i, a in enumerate(agents)},
                {a: done for a in agents}, {a: False for a in agents}, {a: {} for a in agents})

    def episode_totals(self) -> dict[str, torch.Tensor]:
        """Per copy and LMO: data collected, paid to workers, workers' welfare, LMO stage-2 utility."""
        credited = torch.minimum(self.collected, self.targets)
        income = self.unit_value * credited
        return {"collected": self.collected, "credited": credited, "paid": self.paid,
                "worker_welfare": self.worker_welfare, "lmo_utility": income - self.paid, "income": income}
