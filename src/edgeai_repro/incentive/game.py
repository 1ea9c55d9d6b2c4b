"""Exact references for stage 2: the game of one round (a stage game), in a given state.

A round's stage game is fixed by the state its workers are in (`Stage`: costs, and with memory
their last choices and attractions); each LMO's payoff u_m(a) is its expected one-round reward over
the evaluation episodes. With no drift and quantal workers every round is the same game, so a
stationary joint offer earns each LMO H u_m(a); references.py plays these games round by round on
the realised episodes. On one stage game:
- `best_response`: LMO m's exact best offer to the others' (an 11 x 11 grid, then L-BFGS-B from
  the best grid point on the smooth logit payoff, with the exact gradient by autograd, and a grid
  that zooms in where the payoff's kink at the paid quota stops L-BFGS-B);
- `nash`: iterated best response (Gauss-Seidel over LMOs) until a sweep leaves the offers in place
  or no LMO gained more than tol/10 of the mean utility by its best response in the last sweep (a
  payoff-flat direction can keep L-BFGS-B's answer moving by 1e-6 for ever); converged when no LMO
  can gain more than `tol` of its utility by deviating (the exploitability, reported: that is the
  convergence check);
- `stationary_welfare_optimum`: the stationary joint offer maximising TP + LMOs + workers over an
  episode, lambda g(H sum_m credited_m) - H sum_m pay_m + H sum_m surplus_m (payments to LMOs
  cancel): the start of references.welfare_optimum, which optimises the whole offer path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize

from edgeai_repro.incentive.env import ACT_DIM, IncentiveEnv

GRID = torch.linspace(0, 1, 11, dtype=torch.float64)


@dataclass(frozen=True)
class Stage:
    """The state one round's game is played in, per evaluation episode: the workers' costs and
    participation costs (E, W) and, when they remember, last round's choice probabilities and
    learning workers' attractions (E, W, M). A round's stage game is fixed by it."""

    cost: torch.Tensor
    entry: torch.Tensor
    previous: torch.Tensor | None = None
    attraction: torch.Tensor | None = None

    @classmethod
    def now(cls, env: IncentiveEnv) -> Stage:
        """The game of the round the environment's copies are in now."""
        learning = env.conf.worker_model == "learning"
        return cls(
            env.cost.detach().clone(),
            env.entry.detach().clone(),
            env.choice.detach().clone() if env.t > 0 else None,
            env.attraction.detach().clone() if learning else None,
        )

    @classmethod
    def of(cls, env: IncentiveEnv) -> Stage:
        """The first round of the seed's episodes (the evaluation's workers when `env` is the
        evaluation environment)."""
        env.restart()
        return cls.now(env)


def round_outcome(env: IncentiveEnv, stage: Stage, actions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Expected one-round outcome of K joint offers (K, M, 2), averaged over the episodes: (K, M) each."""
    k, e = actions.shape[0], stage.cost.shape[0]
    act = actions.repeat_interleave(e, dim=0)

    def tiled(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.repeat(k, *([1] * (x.dim() - 1)))

    out = env.outcome(
        act, tiled(stage.cost), tiled(stage.entry), tiled(stage.previous), tiled(stage.attraction)
    )
    return {
        key: v.view(k, e, -1).mean(1)
        for key, v in out.items()
        if key in {"reward", "pay", "welfare", "credited"}
    }


def utilities(env: IncentiveEnv, stage: Stage, actions: torch.Tensor) -> torch.Tensor:
    """(K, M) one-round expected rewards of K joint offers."""
    return round_outcome(env, stage, actions)["reward"]


def best_response(env: IncentiveEnv, stage: Stage, joint: torch.Tensor, m: int) -> tuple[torch.Tensor, float]:
    """LMO m's best offer against the others' offers in `joint` (M, 2), and its one-round utility.

    The best of an 11 x 11 grid and m's current offer (so a best response never does worse than
    staying put) starts L-BFGS-B on the smooth logit payoff, with the exact gradient by autograd.
    The payoff has a kink where the data bought reaches the paid quota, which is often where the
    optimum lies and where L-BFGS-B's line search fails: then a grid zooms in around its answer
    (11 x 11 over the cells around the best offer so far, five times finer each step, to 1e-6).
    """
    g = torch.cartesian_prod(GRID, GRID)  # (G, 2)
    cand = torch.cat([g, joint[m].unsqueeze(0)])
    best, value = _best_of(env, stage, joint, m, cand)

    def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
        mine = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
        a = torch.cat([joint[:m], mine.unsqueeze(0), joint[m + 1 :]]).unsqueeze(0)
        out = -utilities(env, stage, a)[0, m]
        out.backward()
        return float(out.detach()), mine.grad.numpy().copy()

    res = minimize(
        negative,
        best.numpy(),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, 1)] * ACT_DIM,
        options={"ftol": 1e-12, "gtol": 1e-9, "maxfun": 30},
    )
    if -float(res.fun) > value:
        best, value = torch.as_tensor(res.x, dtype=torch.float64), -float(res.fun)
    if not res.success:  # a kink: refine by a grid that zooms in
        step = torch.full((ACT_DIM,), 0.02, dtype=torch.float64)
        for _ in range(6):
            lo, hi = (best - step).clamp(0, 1), (best + step).clamp(0, 1)
            axes = [
                torch.linspace(float(lo[d]), float(hi[d]), len(GRID), dtype=torch.float64)
                for d in range(ACT_DIM)
            ]
            found, found_value = _best_of(env, stage, joint, m, torch.cartesian_prod(*axes))
            if found_value > value:
                best, value = found, found_value
            step = (hi - lo) / (len(GRID) - 1)
    return best.clone(), value


def _best_of(
    env: IncentiveEnv, stage: Stage, joint: torch.Tensor, m: int, cand: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """The best of candidate offers (K, 2) for LMO m, the others' offers fixed: one batched evaluation."""
    trial = joint.unsqueeze(0).repeat(len(cand), 1, 1)
    trial[:, m] = cand
    u = utilities(env, stage, trial)[:, m]
    i = int(u.argmax())
    return cand[i].clone(), float(u[i])


@dataclass(frozen=True)
class Equilibrium:
    actions: torch.Tensor  # (M, 2)
    utility: np.ndarray  # (M,) one-round expected rewards at the equilibrium
    exploitability: float  # max over LMOs of (best-response utility - utility), relative to mean |utility|
    iterations: int
    converged: bool


def nash(
    env: IncentiveEnv,
    stage: Stage,
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
        scale = max(float(utilities(env, stage, joint.unsqueeze(0))[0, active].abs().mean()), 1e-12)
        for i in active:
            before = float(utilities(env, stage, joint.unsqueeze(0))[0, i])
            best, value = best_response(env, stage, joint, i)
            moved = max(moved, float((best - joint[i]).abs().max()))
            gained = max(gained, (value - before) / scale)
            joint[i] = best
        if moved < 1e-7 or gained < tol / 10:
            break
    u = utilities(env, stage, joint.unsqueeze(0))[0].numpy()
    gains = [best_response(env, stage, joint, i)[1] - u[i] for i in active]
    scale = max(float(np.mean(np.abs(u[active]))), 1e-12) if active else 1.0
    exploit = max(gains, default=0.0) / scale
    return Equilibrium(joint, u, exploit, it, exploit <= tol)


def stationary_welfare(
    env: IncentiveEnv, stage: Stage, actions: torch.Tensor, lam: float, alpha: float, beta: float
) -> torch.Tensor:
    """(K,) TP + LMOs + workers over an episode of H rounds of each stationary joint offer (the TP's
    value of the episodes' mean data: a start for references.welfare_optimum, which scores each episode)."""
    out = round_outcome(env, stage, actions)
    h = env.conf.horizon
    tp_value = lam * alpha * torch.log1p(beta * h * out["credited"].sum(-1))
    return tp_value - h * out["pay"].sum(-1) + h * out["welfare"].sum(-1)


def stationary_welfare_optimum(
    env: IncentiveEnv, stage: Stage, lam: float, alpha: float, beta: float, starts: list[torch.Tensor]
) -> tuple[torch.Tensor, float]:
    """The stationary joint offer maximising stationary_welfare (multi-start L-BFGS-B over all 2M numbers)."""
    m = env.n_agents

    def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
        a = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
        value = -stationary_welfare(env, stage, a.view(1, m, ACT_DIM), lam, alpha, beta)[0]
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
