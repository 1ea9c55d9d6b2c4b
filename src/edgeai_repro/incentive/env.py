"""Stage 2: the LMO-worker interaction as a multi-agent Markov game (PettingZoo parallel API).

Our reconstruction (README, "stage 2"), in which the LMOs really interact:
- Agents: the M LMOs. Each round LMO m posts an offer a_m = (rho_m, x_m) in [0, 1]^2: the share
  rho_m of its round budget paid as the base participation reward of Eq. 6,
  R_base = theta (1 - B~_m / B_m) = theta rho_m (per worker, in units of its round budget per
  worker), and a unit data price p_m = x_m * max_price * v0_m.
- Workers: one shared pool of `pool_size` workers (default `workers` per LMO). Worker w has a private quadratic cost c_w d^2 / 2
  and a participation cost e_w. Serving LMO m it supplies its best response d = p_m / c_w and earns
  S_wm = R_base,m + p_m^2 / (2 c_w) - e_w (+ a switching bonus for staying with last round's LMO).
  It chooses among all LMOs' offers and staying out by a quantal (logit) response with temperature
  tau: P(w -> m) = exp(S_wm / tau) / (1 + sum_k exp(S_wk / tau)), so every offer moves every
  LMO's expected data, payments and rewards. (`coupling: private` gives each LMO its own workers,
  `quotas` of them or an even split of the pool: the uncoupled reading, kept for comparison.) `worker_model: adaptive` moves the choice
  probabilities part of the way to the new logit response each round (inertia). `worker_model:
  learning` makes the workers learning agents: each keeps an attraction Q_wm per LMO (its estimate
  of the surplus of serving m, 0 before any experience), chooses by the logit of its attractions
  rather than of the posted offers, and after the round updates the attraction of the LMO it served
  toward the surplus it got, Q_wm += adapt_rate P(w -> m) (S_wm - Q_wm) (expected reinforcement
  learning, a bandit learner per worker). The attractions are part of the state, so an LMO's offer
  now moves its future supply too; the one-round references (game.py) assume quantal workers.
- Transition: the state is each LMO's cumulative data, the round, last round's offers and outcomes
  and the workers' choice probabilities; worker costs drift log-normally between rounds when
  `cost_drift` > 0.
- Rewards: the TP pays LMO m pro rata for the data it delivers up to its stage-1 target zeta_m*, in
  per-round quotas zeta_m* / H at the stage-1 value per unit v_m = B_m / zeta_m*; LMO m's reward is
  v_m min(D_m, zeta_m*/H) - what it pays its workers (+ welfare_weight x its workers' surplus).
All quantities are expectations over the workers' logit choices (smooth in the offers); a worker's
surplus is the logit consumer surplus, tau log(1 + sum_k exp(S_wk / tau)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from edgeai_repro.incentive.config import CostScale, EnvConf

OBS_DIM = 7
ACT_DIM = 2


@dataclass(frozen=True)
class World:
    """Units fixed for a whole ASOSA run, from the first stage-1 solution.

    price_unit: each LMO's first value of a data unit v0 = B_m / zeta_m* (prices are
    action x max_price x v0, in currency). cost_scale: one scale for the shared pool,
    c_w = kappa_w x mean over active LMOs of v0 T W / zeta0* (env.cost_scale=per_lmo) or
    kappa_w x v0 T W / mean zeta0* (mean_target), so at price v0 a kappa = 1 worker supplies about
    its 1/(T W) share of an LMO's first target per round. budget_unit: the mean round
    budget per worker, the unit of participation costs and of the choice temperature. Holding these
    fixed makes workers' costs a property of the world, not of the current prices (otherwise ASOSA
    would chase its own tail).
    """

    price_unit: np.ndarray
    cost_scale: float
    budget_unit: float

    @classmethod
    def from_equilibrium(cls, conf: EnvConf, targets: np.ndarray, rewards: np.ndarray) -> World:
        active = targets > 0
        per_lmo = conf.pool(len(targets)) / len(targets)  # W: an LMO's share of the pool
        fallback = rewards.sum() / max(targets.sum(), 1e-12)
        unit = np.where(active, rewards / np.where(active, targets, 1.0), fallback)
        if conf.cost_scale == CostScale.mean_target:
            scale = float(np.mean(unit[active]) * conf.horizon * per_lmo / np.mean(targets[active]))
        else:
            # The mean of each LMO's v0 T W / target: an LMO near stage 1's drop-out threshold
            # (target -> 0) makes every worker of the pool dear (seed 0 of 5 LMOs: 19x; its LMOs'
            # workers then deliver 1-6% of the targets at the Nash offers).
            scale = float(np.mean((unit * conf.horizon * per_lmo / np.where(active, targets, 1.0))[active]))
        budget = float(np.mean(rewards[active])) / conf.horizon / per_lmo
        return cls(price_unit=unit, cost_scale=scale, budget_unit=budget)


class IncentiveEnv:
    """Batched over `batch` independent copies (vectorised rollouts), PettingZoo-style API.

    `restart()` replays the same episodes (workers and cost drift) from the seed: the references and
    the exploitability are computed on exactly the episodes a method is evaluated on. `tile(r)`
    repeats the current copies r times (the same workers and the same drift in every repeat), so that
    r deviations from one joint policy are played side by side in one batched rollout."""

    metadata: ClassVar[dict] = {"name": "hierarchical_incentive_v1", "render_modes": []}

    def __init__(
        self,
        conf: EnvConf,
        targets: np.ndarray,
        rewards: np.ndarray,
        world: World,
        batch: int = 1,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.conf, self.batch, self.device = conf, batch, torch.device(device)
        f64 = dict(dtype=torch.float64, device=self.device)
        self.targets = torch.as_tensor(targets, **f64)  # (M,)
        self.rewards = torch.as_tensor(rewards, **f64)  # (M,) B_m
        self.n_agents = m = len(targets)
        self.n_workers = conf.pool(m)
        self.seed, self.replicas = seed, 1
        self.possible_agents = [f"lmo_{i}" for i in range(m)]
        self.agents: list[str] = []
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(seed)
        self.active = self.targets > 0
        safe = torch.where(self.active, self.targets, torch.ones_like(self.targets))
        self.unit_value = torch.where(self.active, self.rewards / safe, torch.zeros_like(self.targets))  # v_m
        self.quota = self.targets / conf.horizon  # data paid for per round
        self.round_budget = self.rewards / conf.horizon / (self.n_workers / m)  # per worker of its share
        self.price_unit = torch.as_tensor(world.price_unit, **f64)
        self.cost_scale, self.budget_unit = float(world.cost_scale), float(world.budget_unit)
        # Which LMOs each worker may serve: all active ones (shared pool) or only its own (private
        # coupling: LMO m's `homes[m]` workers; workers beyond the quotas serve no one).
        homes = torch.tensor(conf.homes(m), device=self.device)
        owner = torch.full((self.n_workers,), m, device=self.device)
        owner[: int(homes.sum())] = torch.repeat_interleave(torch.arange(m, device=self.device), homes)
        own = torch.nn.functional.one_hot(owner, m + 1)[:, :m].bool()
        self.reach = (own if conf.coupling == "private" else torch.ones_like(own)) & self.active.view(1, -1)

    # -- spaces (gymnasium when available, so other algorithms can plug in) --
    def observation_space(self, agent: str):
        from gymnasium.spaces import Box

        return Box(low=-np.inf, high=np.inf, shape=(OBS_DIM,), dtype=np.float32)

    def action_space(self, agent: str):
        from gymnasium.spaces import Box

        return Box(low=0.0, high=1.0, shape=(ACT_DIM,), dtype=np.float32)

    def _uniform(self, lo_hi, shape: tuple[int, ...]) -> torch.Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(shape, generator=self.gen, device=self.device, dtype=torch.float64)

    def restart(self) -> torch.Tensor:
        """Reset to the first episodes of the seed (the ones a fresh environment's first reset draws)."""
        self.gen.manual_seed(self.seed)
        self.batch //= self.replicas
        self.replicas = 1
        return self.reset_batch()

    def tile(self, r: int) -> torch.Tensor:
        """Repeat the current copies r times (state and future drift alike); returns the observations."""
        self.replicas *= r
        self.batch *= r
        for name in (
            "cost",
            "entry",
            "choice",
            "attraction",
            "collected",
            "paid",
            "credited",
            "worker_welfare",
            "last",
        ):
            value = getattr(self, name)
            setattr(self, name, value.repeat(r, *([1] * (value.dim() - 1))))
        return self._obs()

    def reset_batch(self) -> torch.Tensor:
        b, m, w = self.batch, self.n_agents, self.n_workers
        self.t = 0
        self.cost = self._uniform(self.conf.worker_cost, (b, w)) * self.cost_scale
        self.entry = self._uniform(self.conf.participation_cost, (b, w)) * self.budget_unit
        self.choice = torch.zeros(b, w, m, dtype=torch.float64, device=self.device)  # P(w -> m) last round
        self.attraction = torch.zeros(b, w, m, dtype=torch.float64, device=self.device)  # learning workers' Q
        self.collected = torch.zeros(b, m, dtype=torch.float64, device=self.device)
        self.paid = torch.zeros(b, m, dtype=torch.float64, device=self.device)
        self.credited = torch.zeros(b, m, dtype=torch.float64, device=self.device)
        self.worker_welfare = torch.zeros(b, m, dtype=torch.float64, device=self.device)
        self.last = torch.zeros(b, m, 5, dtype=torch.float64, device=self.device)
        return self._obs()

    def _obs(self) -> torch.Tensor:
        progress = self.collected / self.targets.clamp_min(1e-12)
        time = torch.full_like(progress, self.t / self.conf.horizon)
        return torch.cat(
            [progress.unsqueeze(-1), time.unsqueeze(-1), self.last], dim=-1
        ).float()  # (B, M, OBS)

    def prices(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Share and absolute price; LMOs that dropped out in stage 1 (target 0) offer nothing."""
        active = self.active.view(1, -1)
        rho = torch.where(active, action[..., 0].double().clamp(0, 1), 0.0)
        price = torch.where(
            active,
            action[..., 1].double().clamp(0, 1) * self.conf.max_price * self.price_unit.view(1, -1),
            0.0,
        )
        return rho, price

    def outcome(
        self,
        action: torch.Tensor,
        cost: torch.Tensor,
        entry: torch.Tensor,
        previous: torch.Tensor | None = None,
        attraction: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One round's expected outcome for offers `action` (B, M, 2) and workers (B, W); no state change.
        `attraction` (B, W, M): learning workers' values, used when worker_model is learning.

        Returns per LMO (B, M): data D, pay, credited data, workers' surplus and reward; `choice` (B, W, M)
        (and the updated `attraction` for learning workers).
        """
        conf = self.conf
        rho, price = self.prices(action)
        base = conf.theta * rho * self.round_budget.view(1, -1)  # (B, M) per worker
        p = price.unsqueeze(1)  # (B, 1, M)
        c = cost.unsqueeze(-1)  # (B, W, 1)
        surplus = base.unsqueeze(1) + p**2 / (2 * c) - entry.unsqueeze(-1)  # (B, W, M)
        utility = surplus + (
            conf.switching_cost * self.budget_unit * previous if previous is not None else 0.0
        )
        tau = conf.choice_temperature * self.budget_unit
        logits = torch.where(self.reach.unsqueeze(0), utility / tau, torch.full_like(utility, -float("inf")))
        full = torch.cat([torch.zeros_like(logits[..., :1]), logits], dim=-1)  # staying out: utility 0
        choice = torch.softmax(full, dim=-1)[..., 1:]  # (B, W, M)
        # A worker's expected surplus under logit choice is tau * logsumexp (the standard logit
        # consumer surplus, >= 0: staying out is always possible); it is attributed to the LMOs in
        # proportion to the worker's choice probabilities.
        gain = tau * torch.logsumexp(full, dim=-1, keepdim=True)  # (B, W, 1)
        if conf.worker_model == "adaptive" and previous is not None:
            choice = previous + conf.adapt_rate * (choice - previous)
        learned = None
        if conf.worker_model == "learning" and attraction is not None:
            # Learning workers choose on what they have learned, not on this round's offers; their
            # surplus is what the chosen offers actually pay them.
            known = torch.where(
                self.reach.unsqueeze(0), attraction / tau, torch.full_like(attraction, -float("inf"))
            )
            choice = torch.softmax(torch.cat([torch.zeros_like(known[..., :1]), known], dim=-1), dim=-1)[
                ..., 1:
            ]
            gain = (choice * surplus).sum(-1, keepdim=True)
            learned = attraction + conf.adapt_rate * choice * (surplus - attraction)
        supply = p / c  # (B, W, M)
        data = (choice * supply).sum(1)
        pay = (choice * (base.unsqueeze(1) + p * supply)).sum(1)
        welfare = (choice * gain / choice.sum(-1, keepdim=True).clamp_min(1e-300)).sum(1)
        credited = torch.minimum(data, self.quota.view(1, -1))
        reward = self.unit_value * credited - pay + conf.welfare_weight * welfare
        return {
            "rho": rho,
            "choice": choice,
            "data": data,
            "pay": pay,
            "welfare": welfare,
            "credited": credited,
            "reward": reward,
            "attraction": learned,
        }

    def _round(self, action: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.outcome(
            action, self.cost, self.entry, self.choice if self.t > 0 else None, self.attraction
        )

    def preview(self, action: torch.Tensor) -> torch.Tensor:
        """Immediate reward (B, M) of `action` from the current state."""
        return self._round(action)["reward"]

    def step_batch(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, bool, dict[str, torch.Tensor]]:
        """action: (B, M, 2) in [0, 1]. Returns obs, reward (B, M), done, info."""
        conf = self.conf
        out = self._round(action)
        self.choice = out["choice"]
        if out["attraction"] is not None:
            self.attraction = out["attraction"]
        self.collected = self.collected + out["data"]
        self.paid, self.credited = self.paid + out["pay"], self.credited + out["credited"]
        self.worker_welfare = self.worker_welfare + out["welfare"]
        share = out["choice"].sum(1) / self.n_workers
        others = (action[..., 1].double().sum(-1, keepdim=True) - action[..., 1].double()) / max(
            self.n_agents - 1, 1
        )
        self.last = torch.stack(
            [out["rho"], action[..., 1].double(), share, out["data"] / self.quota.clamp_min(1e-12), others],
            dim=-1,
        )
        if conf.cost_drift > 0:
            # One draw per distinct copy, repeated over tiled replicas (they replay the same episodes).
            b, w = self.cost.shape
            noise = torch.randn(
                (b // self.replicas, w), generator=self.gen, device=self.device, dtype=torch.float64
            ).repeat(self.replicas, 1)
            self.cost = self.cost * torch.exp(conf.cost_drift * noise)
        self.t += 1
        done = self.t >= conf.horizon
        info = {"data": out["data"], "paid": out["pay"], "welfare": out["welfare"], "participation": share}
        return self._obs(), out["reward"].float(), done, info

    # -- PettingZoo ParallelEnv interface: one copy, numpy in and out --
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.gen.manual_seed(seed)
        self.batch = 1
        self.agents = list(self.possible_agents)
        obs = self.reset_batch()[0].numpy()
        return {a: obs[i] for i, a in enumerate(self.agents)}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        act = torch.tensor(
            np.stack([np.asarray(actions[a], dtype=np.float32) for a in self.possible_agents])
        )[None]
        obs, reward, done, _info = self.step_batch(act)
        o, r = obs[0].numpy(), reward[0].numpy()
        agents = list(self.agents)
        if done:
            self.agents = []
        return (
            {a: o[i] for i, a in enumerate(agents)},
            {a: float(r[i]) for i, a in enumerate(agents)},
            dict.fromkeys(agents, done),
            dict.fromkeys(agents, False),
            {a: {} for a in agents},
        )

    def episode_totals(self) -> dict[str, torch.Tensor]:
        """Per copy and LMO: data collected and credited, paid to workers, workers' welfare, LMO
        stage-2 utility (income from the TP minus payments to workers)."""
        income = self.unit_value * self.credited
        return {
            "collected": self.collected,
            "credited": self.credited,
            "paid": self.paid,
            "worker_welfare": self.worker_welfare,
            "lmo_utility": income - self.paid,
            "income": income,
        }
