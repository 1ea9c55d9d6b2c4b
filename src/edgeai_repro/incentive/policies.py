"""Stage-2 methods behind one interface; each is a class that a Hydra config option
(conf/incentive/method/<name>.yaml, `_target_`) instantiates.

A method says whether it learns (and with which algorithm and critic), whether ASOSA's outer loop
runs, and, when it does not learn, how the LMOs act: `behaviour(ctx)` returns a function from the
environment and the observations to the LMOs' offers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgeai_repro.incentive.env import ACT_DIM, IncentiveEnv
from edgeai_repro.incentive.episodes import Behaviour


@dataclass
class Context:
    """What a non-learned behaviour may use: the stage-1 unit costs, the seed, the scenario."""

    P: np.ndarray
    seed: int
    gen: torch.Generator


def constant(env: IncentiveEnv, obs: torch.Tensor, share: float, price: float) -> torch.Tensor:
    act = torch.empty(obs.shape[0], env.n_agents, ACT_DIM)
    act[..., 0], act[..., 1] = share, price
    return act


@dataclass
class Method:
    name: str = "method"
    learned: bool = False
    # ASOSA's outer loop (stage 1 <-> stage 2): only the mechanism itself (asosa.yaml) runs it. Every
    # method is compared on the first stage-1 game, so for a baseline the loop would only cost time.
    outer_loop: bool = False
    # Whether its exploitability is measured: for the learned policies and the fixed offers; not for
    # random offers (they differ on every replay of the episodes) nor for myopic best-response
    # dynamics (its grid search in every deviation's replica would take minutes per cell).
    exploitable: bool = True

    def behaviour(self, ctx: Context) -> Behaviour:
        raise NotImplementedError


@dataclass
class Learned(Method):
    """A multi-agent DRL policy: MADDPG (centralised critics), independent DDPG, or TD3."""

    algorithm: str = "maddpg"
    critic: str = "centralized"
    learned: bool = True


@dataclass
class Random(Method):
    exploitable: bool = False

    def behaviour(self, ctx: Context) -> Behaviour:
        return lambda env, obs: torch.rand(obs.shape[0], env.n_agents, ACT_DIM, generator=ctx.gen)


@dataclass
class Fixed(Method):
    """The same share and price every round (share 0: a constant posted price)."""

    share: float = 0.5
    price: float = 0.5

    def behaviour(self, ctx: Context) -> Behaviour:
        return lambda env, obs: constant(env, obs, self.share, self.price)


@dataclass
class StackelbergOnly(Method):
    """Workers are paid the stage-1 unit cost P_m per unit, no base reward, no learning."""

    def behaviour(self, ctx: Context) -> Behaviour:
        def act(env: IncentiveEnv, obs: torch.Tensor) -> torch.Tensor:
            price = torch.as_tensor(ctx.P) / (env.conf.max_price * env.price_unit.clamp_min(1e-12))
            action = constant(env, obs, 0.0, 0.0)
            action[..., 1] = price.clamp(0, 1).float()
            return action

        return act


@dataclass
class Myopic(Method):
    """Best-response dynamics: every round each LMO picks, on a 9 x 9 grid, the offer with the
    best immediate reward against the others' offers of the previous round. With private costs it
    sees this episode's workers; without, workers of the law's mean cost (what a prior gives)."""

    private_costs: bool = True
    grid: int = 9
    exploitable: bool = False

    def behaviour(self, ctx: Context) -> Behaviour:
        last: dict[str, torch.Tensor] = {}
        levels = torch.linspace(0, 1, self.grid, dtype=torch.float64)
        cands = torch.cartesian_prod(levels, levels)  # (G, 2)

        def act(env: IncentiveEnv, obs: torch.Tensor) -> torch.Tensor:
            b, m = obs.shape[0], env.n_agents
            prev = last.get("a") if env.t > 0 and "a" in last and last["a"].shape[0] == b else None
            prev = prev if prev is not None else torch.full((b, m, ACT_DIM), 0.5, dtype=torch.float64)
            cost, entry = env.cost, env.entry
            if not self.private_costs:
                lo, hi = env.conf.worker_cost
                cost = torch.full_like(cost, (lo + hi) / 2 * env.cost_scale)
                lo, hi = env.conf.participation_cost
                entry = torch.full_like(entry, (lo + hi) / 2 * env.budget_unit)
            # Every LMO's every candidate against the others' last offers, in one batched evaluation.
            g = len(cands)
            trial = prev.view(b, 1, 1, m, ACT_DIM).repeat(1, m, g, 1, 1)  # (B, M, G, M, 2)
            idx = torch.arange(m)
            trial[:, idx, :, idx] = cands.view(1, 1, g, ACT_DIM).expand(
                m, b, g, ACT_DIM
            )  # (M, B, G, 2) by indexing rules
            out = env.outcome(
                trial.view(b * m * g, m, ACT_DIM),
                cost.repeat_interleave(m * g, 0),
                entry.repeat_interleave(m * g, 0),
                None,
            )
            own = out["reward"].view(b, m, g, m)[:, idx, :, idx].permute(1, 0, 2)  # (B, M, G): LMO i's reward
            best = cands[own.argmax(-1)]  # (B, M, 2)
            last["a"] = best
            return best.float()

        return act


@dataclass
class Equilibrium(Method):
    """The LMOs play the per-round Nash equilibrium offers of the game on the evaluation episodes
    (references.py; a reference, not a deployable policy: it uses every LMO's utility)."""


def build(node) -> Method:
    """Instantiate the configured method (`incentive.method` holds its `_target_`)."""
    from hydra.utils import instantiate

    method = instantiate(node) if not isinstance(node, Method) else node
    if not isinstance(method, Method):
        raise TypeError(f"incentive.method builds a {type(method).__name__}, not a policies.Method")
    return method
