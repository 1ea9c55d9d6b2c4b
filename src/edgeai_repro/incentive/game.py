"""Exact references for stage 2: the static game of one round, on given workers.

With no switching cost and no drift, every round of an episode is the same game (the TP pays per
round quota), so a stationary joint offer a = (a_1..a_M) earns each LMO H u_m(a), where u_m is its
expected one-round reward over the evaluation episodes' workers. On that game:
- `best_response`: LMO m's exact best offer to the others' (an 11 x 11 grid, then L-BFGS-B from
  the best grid point on the smooth logit payoff, with the exact gradient by autograd);
- `nash`: iterated best response (Gauss-Seidel over LMOs) until a sweep leaves the offers in place
  or no LMO gained more than tol/100 of the mean utility by its best response in the last sweep (a
  payoff-flat direction can keep L-BFGS-B's answer moving by 1e-6 for ever); converged when no LMO
  can gain more than `tol` of its utility by deviating (the exploitability, reported: that is the
  convergence check);
- `welfare_optimum`: the joint offer maximising TP + LMOs + workers over an episode,
  lambda g(H sum_m credited_m) - H sum_m pay_m + H sum_m surplus_m (payments to LMOs cancel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize

from edgeai_repro.incentive.env import ACT_DIM, IncentiveEnv

GRID = torch.linspace(0, 1, 11, dtype=torch.float64)


@dataclass(frozen=True)
class Workers:
    """The workers of the evaluation episodes: costs and participation costs, (E, W) each."""

    cost: torch.Tensor
    entry: torch.Tensor

    @classmethod
    def of(cls, env: IncentiveEnv) -> Workers:
        env.reset_batch()
        return cls(env.cost.clone(), env.entry.clone())


def round_outcome(env: IncentiveEnv, workers: Workers, actions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Expected one-round outcome of K joint offers (K, M, 2), averaged over the episodes: (K, M) each."""
    k, e = actions.shape[0], workers.cost.shape[0]
    act = actions.repeat_interleave(e, dim=0)
    out = env.outcome(act, workers.cost.repeat(k, 1), workers.entry.repeat(k, 1))
    return {
        key: v.view(k, e, -1).mean(1)
        for key, v in out.items()
        if key in {"reward", "pay", "welfare", "credited"}
    }


def utilities(env: IncentiveEnv, workers: Workers, actions: torch.Tensor) -> torch.Tensor:
    """(K, M) one-round expected rewards of K joint offers."""
    return round_outcome(env, workers, actions)["reward"]


def best_response(
    env: IncentiveEnv, workers: Workers, joint: torch.Tensor, m: int
) -> tuple[torch.Tensor, float]:
    """LMO m's best offer against the others' offers in `joint` (M, 2), and its one-round utility."""
    g = torch.cartesian_prod(GRID, GRID)  # (G, 2)
    cand = joint.unsqueeze(0).repeat(len(g), 1, 1)
    cand[:, m] = g
    u = utilities(env, workers, cand)[:, m]
    start = g[int(u.argmax())].numpy()

    def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
        mine = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
        a = torch.cat([joint[:m], mine.unsqueeze(0), joint[m + 1 :]]).unsqueeze(0)
        value = -utilities(env, workers, a)[0, m]
        value.backward()
        return float(value.detach()), mine.grad.numpy().copy()

    res = minimize(
        negative,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, 1)] * ACT_DIM,
        options={"ftol": 1e-12, "gtol": 1e-9},
    )
    best = torch.as_tensor(res.x if -res.fun >= float(u.max()) else start, dtype=torch.float64)
    return best, max(-float(res.fun), float(u.max()))


@dataclass(frozen=True)
class Equilibrium:
    actions: torch.Tensor  # (M, 2)
    utility: np.ndarray  # (M,) one-round expected rewards at the equilibrium
    exploitability: float  # max over LMOs of (best-response utility - utility), relative to mean |utility|
    iterations: int
    converged: bool


def nash(
    env: IncentiveEnv,
    workers: Workers,
    start: torch.Tensor | None = None,
    tol: float = 1e-4,
    max_iters: int = 200,
) -> Equilibrium:
    """A Nash equilibrium of the one-round game by iterated best response, with its convergence check."""
    m = env.n_agents
    active = [i for i in range(m) if bool(env.active[i])]
    joint = (
        start.clone().double() if start is not None else torch.full((m, ACT_DIM), 0.5, dtype=torch.float64)
    )
    it = 0
    for it in range(1, max_iters + 1):  # noqa: B007 - `it` is read after the loop: the rounds it took
        moved, gained = 0.0, 0.0
        scale = max(float(utilities(env, workers, joint.unsqueeze(0))[0, active].abs().mean()), 1e-12)
        for i in active:
            before = float(utilities(env, workers, joint.unsqueeze(0))[0, i])
            best, value = best_response(env, workers, joint, i)
            moved = max(moved, float((best - joint[i]).abs().max()))
            gained = max(gained, (value - before) / scale)
            joint[i] = best
        if moved < 1e-7 or gained < tol / 100:
            break
    u = utilities(env, workers, joint.unsqueeze(0))[0].numpy()
    gains = [best_response(env, workers, joint, i)[1] - u[i] for i in active]
    scale = max(float(np.mean(np.abs(u[active]))), 1e-12) if active else 1.0
    exploit = max(gains, default=0.0) / scale
    return Equilibrium(joint, u, exploit, it, exploit <= tol)


def episode_welfare(
    env: IncentiveEnv, workers: Workers, actions: torch.Tensor, lam: float, alpha: float, beta: float
) -> torch.Tensor:
    """(K,) TP + LMOs + workers over an episode of H rounds of each stationary joint offer."""
    out = round_outcome(env, workers, actions)
    h = env.conf.horizon
    tp_value = lam * alpha * torch.log1p(beta * h * out["credited"].sum(-1))
    return tp_value - h * out["pay"].sum(-1) + h * out["welfare"].sum(-1)


def welfare_optimum(
    env: IncentiveEnv, workers: Workers, lam: float, alpha: float, beta: float, starts: list[torch.Tensor]
) -> tuple[torch.Tensor, float]:
    """The stationary joint offer maximising episode welfare (multi-start L-BFGS-B over all 2M numbers)."""
    m = env.n_agents

    def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
        a = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
        value = -episode_welfare(env, workers, a.view(1, m, ACT_DIM), lam, alpha, beta)[0]
        value.backward()
        return float(value.detach()), a.grad.numpy().copy()

    best_x, best_v = None, -np.inf
    for s in starts:
        res = minimize(
            negative,
            s.double().flatten().numpy(),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0, 1)] * (m * ACT_DIM),
        )
        if -res.fun > best_v:
            best_x, best_v = res.x, -float(res.fun)
    return torch.as_tensor(best_x, dtype=torch.float64).view(m, ACT_DIM), best_v
