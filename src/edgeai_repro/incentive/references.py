"""References for the game actually played, on the evaluation episodes, and exploitability.

Every environment setting (coupling, drift, worker model, pool) is covered the same way:
- **Per-round Nash path** (`stage_nash_path`): in each round, the Nash equilibrium of that round's
  stage game given the state the workers are in on the realised episodes (their drifted costs, last
  choices, attractions), played, and the episodes moved on; its utilities are summed over the episode
  exactly as a method's are. Without memory (quantal workers, no switching cost) the rounds are
  independent, so this is an equilibrium of the whole episode; without drift too, every round is the
  same game and the path is one stationary offer (computed once).
- **Open-loop best response to the reference** (only when workers remember): today's offers move
  tomorrow's choices, so the per-round game is not the whole game. For each LMO, its best whole
  offer path (H offers, L-BFGS-B over its 2H numbers with the exact gradient through the episode by
  autograd) against the others' per-round equilibrium offers: the utility planning reaches, and how
  exploitable the per-round reference is. (An open-loop equilibrium by iterated best response over
  paths was tried: it did not converge in 30 sweeps on a three-LMO game with loyal workers and took
  minutes, so it is not offered.)
- **Welfare optimum** (`welfare_optimum`): the offer path of every LMO maximising TP + LMOs + workers
  over the episodes (L-BFGS-B over all 2MH numbers, from the best stationary offer and the Nash path).
- **Exploitability** (`best_responses`): for a joint policy, each LMO's best response over offer
  paths with the others' policies fixed (they react to what it does: the gradient flows through their
  networks), all LMOs' deviations played side by side in one batched rollout. A deviation is one
  path for all evaluation episodes, as the references' offers are; a policy that tailors its offers
  to each episode may do better, so the gain is a lower bound on what a deviation could earn.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize

from edgeai_repro.core import cache
from edgeai_repro.core.files import atomic_write_json
from edgeai_repro.incentive import game
from edgeai_repro.incentive.config import IncentiveConf
from edgeai_repro.incentive.env import ACT_DIM, IncentiveEnv, World
from edgeai_repro.incentive.episodes import (
    Behaviour,
    evaluate,
    fixed_costs,
    parties,
    path_behaviour,
    realised_path,
    rollout,
)
from edgeai_repro.incentive.stackelberg import Equilibrium

REFERENCES = cache.get("incentive/references")
GRID = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)  # constant offers tried as starts of a best response


def _active(env: IncentiveEnv) -> list[int]:
    return [i for i in range(env.n_agents) if bool(env.active[i])]


def stage_nash_path(
    env: IncentiveEnv, c: IncentiveConf, every_round: bool = False
) -> tuple[torch.Tensor, float, bool, int]:
    """The per-round Nash path (H, M, 2) on the seed's episodes, the largest exploitability of its
    stage equilibria (relative to the mean |utility|), whether each converged, and the solver rounds.
    `every_round` solves each round even when every round is the same game (the tests compare)."""
    stationary = not env.conf.remembers() and env.conf.cost_drift == 0 and not every_round
    env.restart()
    path, worst, converged, iterations, ne = [], 0.0, True, 0, None
    for _ in range(env.conf.horizon):
        if ne is None or not stationary:
            start = ne.actions if ne is not None else None
            ne = game.nash(
                env, game.Stage.now(env), start=start, tol=c.asosa.nash_tol, max_iters=c.asosa.nash_iters
            )
            worst, converged, iterations = (
                max(worst, ne.exploitability),
                converged and ne.converged,
                iterations + ne.iterations,
            )
        path.append(ne.actions)
        with torch.no_grad():
            env.step_batch(ne.actions.unsqueeze(0).expand(env.batch, -1, -1))
    return torch.stack(path), worst, converged, iterations


def _lbfgsb(objective, x0: np.ndarray, maxfun: int = 400) -> np.ndarray:
    """Minimise objective(x) -> (value, gradient) over the box [0, 1]^n."""

    def f(x: np.ndarray) -> tuple[float, np.ndarray]:
        var = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
        value = objective(var)
        (grad,) = torch.autograd.grad(value, var)
        return float(value.detach()), grad.numpy().copy()

    res = minimize(
        f, x0, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * len(x0), options={"maxfun": maxfun}
    )
    return res.x


def best_responses(
    env: IncentiveEnv,
    behaviour: Behaviour,
    c: IncentiveConf,
    starts: list[torch.Tensor],
    only: list[int] | None = None,
    maxfun: int = 150,
) -> tuple[np.ndarray, torch.Tensor]:
    """Each selected LMO's best offer path (H, 2) against the others following `behaviour`, and its
    payoff: (M,) payoffs (NaN for LMOs not selected) and the paths (M, H, 2). Every deviation plays in
    its own replica of the episodes, all in one batched rollout. Each LMO starts from whichever of
    `starts` (joint paths (H, M, 2)) pays it most, then one L-BFGS-B run improves every LMO's path at
    once; a start is scored in one gradient-free rollout, so keeping only the best one costs a
    fraction of a descent from each (measured on trained ASOSA, independent DDPG and TD3 policies,
    seeds 0-2: the same gains to within 0.04% of B_m in 1/1.8 to 1/3.7 of the time; L-BFGS-B stops
    before 50 evaluations, so `maxfun` does not bind)."""
    lmos = only if only is not None else _active(env)
    n, h, m = len(lmos), env.conf.horizon, env.n_agents
    index = torch.tensor(lmos)
    mask = torch.zeros(n, m, dtype=torch.bool)
    mask[torch.arange(n), index] = True

    def payoffs(x: torch.Tensor) -> torch.Tensor:  # x (n, H, 2) -> (n,) each deviator's payoff
        override = torch.zeros(n, h, m, ACT_DIM, dtype=torch.float64)
        override[torch.arange(n), :, index] = x
        totals = rollout(env, behaviour, override, mask)
        own = parties(totals, c, torch.zeros(m, dtype=torch.float64))["payoff"].mean(1)  # (n, M)
        return own[torch.arange(n), index]

    candidates = torch.stack([start[:, index].permute(1, 0, 2) for start in starts])  # (S, n, H, 2)
    with torch.no_grad():
        scores = torch.stack([payoffs(x) for x in candidates])  # (S, n)
    x0 = candidates[scores.argmax(0), torch.arange(n)]  # (n, H, 2): each deviator's best start
    x = torch.as_tensor(
        _lbfgsb(lambda v: -payoffs(v.view(n, h, ACT_DIM)).sum(), x0.reshape(-1).numpy(), maxfun),
        dtype=torch.float64,
    ).view(n, h, ACT_DIM)
    with torch.no_grad():
        values = payoffs(x)
    # L-BFGS-B minimises the sum, so one deviator may end below its start: keep the better of the two
    start_values = scores.max(0).values
    better = values >= start_values
    chosen = torch.where(better.view(n, 1, 1), x, x0)
    best = np.full(m, np.nan)
    paths = torch.zeros(m, h, ACT_DIM, dtype=torch.float64)
    best[lmos] = torch.where(better, values, start_values).numpy()
    paths[index] = chosen
    return best, paths


def grid_start(env: IncentiveEnv, behaviour: Behaviour, c: IncentiveConf) -> torch.Tensor:
    """For each LMO the best constant offer of a 5 x 5 grid against `behaviour` (a joint path
    (H, M, 2)): one batched rollout of every (LMO, offer) pair."""
    lmos, h, m = _active(env), env.conf.horizon, env.n_agents
    offers = torch.cartesian_prod(GRID, GRID)  # (G, 2)
    g, n = len(offers), len(lmos)
    override = torch.zeros(n * g, h, m, ACT_DIM, dtype=torch.float64)
    mask = torch.zeros(n * g, m, dtype=torch.bool)
    for k, i in enumerate(lmos):
        override[k * g : (k + 1) * g, :, i] = offers.unsqueeze(1)
        mask[k * g : (k + 1) * g, i] = True
    with torch.no_grad():
        totals = rollout(env, behaviour, override, mask)
        payoff = parties(totals, c, torch.zeros(m, dtype=torch.float64))["payoff"].mean(1)  # (n g, M)
    start = torch.full((h, m, ACT_DIM), 0.5, dtype=torch.float64)
    for k, i in enumerate(lmos):
        start[:, i] = offers[int(payoff[k * g : (k + 1) * g, i].argmax())]
    return start


def exploitability(
    env: IncentiveEnv, behaviour: Behaviour, c: IncentiveConf, E: np.ndarray, rewards: np.ndarray
) -> np.ndarray:
    """(M,) what each LMO gains by its best response over offer paths to the others' policies, in %
    of its stage-1 reward B_m (NaN for dropped LMOs). Starts: its own realised offers and the best
    constant offer; a gain below 0 (the policy's own per-episode offers beat every single path) is 0."""
    own = evaluate(env, behaviour, E, c).payoff
    starts = [realised_path(env, behaviour), grid_start(env, behaviour, c)]
    best, _ = best_responses(env, behaviour, c, starts)
    gains = np.maximum(best - own, 0.0)
    return np.where(np.isnan(best), np.nan, 100 * gains / np.maximum(rewards, 1e-12))


def welfare_optimum(
    env: IncentiveEnv, c: IncentiveConf, E: np.ndarray, starts: list[torch.Tensor]
) -> tuple[torch.Tensor, float]:
    """The joint offer path (H, M, 2) maximising TP + LMOs + workers on the evaluation episodes (each
    episode's TP value of its own data, as a method is scored), and that total."""
    h, m = env.conf.horizon, env.n_agents
    fixed = fixed_costs(env, E)

    def total(x: torch.Tensor) -> torch.Tensor:
        totals = rollout(env, None, x.view(1, h, m, ACT_DIM))
        return parties(totals, c, fixed)["total"].mean()

    best, value = None, -np.inf
    for start in starts:
        x = torch.as_tensor(_lbfgsb(lambda v: -total(v), start.reshape(-1).numpy()), dtype=torch.float64)
        with torch.no_grad():
            v = float(total(x))
        if v > value:
            best, value = x.view(h, m, ACT_DIM), v
    assert best is not None
    return best, value


def compute(env: IncentiveEnv, c: IncentiveConf, E: np.ndarray, eq: Equilibrium) -> dict:
    """Every reference of one game (stage-1 solution, environment, evaluation episodes)."""
    path, worst, converged, iterations = stage_nash_path(env, c)
    ne = evaluate(env, path_behaviour(path), E, c)
    stage0 = game.Stage.of(env)
    stationary, _ = game.stationary_welfare_optimum(
        env,
        stage0,
        c.lam,
        c.alpha,
        c.beta,
        [path[0], torch.full_like(path[0], 0.5), torch.zeros_like(path[0])],
    )
    h = env.conf.horizon
    _, welfare = welfare_optimum(env, c, E, [stationary.unsqueeze(0).expand(h, -1, -1).clone(), path])
    out = {
        "path": path,
        "lmo_ne": ne.lmo,
        "payoff_ne": ne.payoff,
        "exploitability": worst,
        "ne_converged": converged,
        "ne_iterations": iterations,
        "welfare_opt": welfare,
        "whole_game": not env.conf.remembers(),
    }
    if env.conf.remembers():
        # Each LMO's best offer path over the episode against the others' per-round equilibrium
        # offers: what planning for the workers' memory is worth against that reference.
        others = path_behaviour(path)
        best, _ = best_responses(env, others, c, [path, grid_start(env, others, c)])
        gain = np.where(np.isnan(best), 0.0, np.maximum(best - ne.payoff, 0.0))
        out.update(
            lmo_olbr=ne.lmo + gain,
            ref_exploitability_pct=float(np.max(100 * gain / np.maximum(eq.rewards, 1e-12))),
        )
    return out


_TENSORS = ("path",)
_ARRAYS = ("lmo_ne", "payoff_ne", "lmo_olbr")


def references(
    env: IncentiveEnv,
    c: IncentiveConf,
    E: np.ndarray,
    eq: Equilibrium,
    world: World,
    store: Path | None = None,
) -> dict:
    """A game's references on `env`'s evaluation episodes (`compute`). They depend on the game (stage-1
    solution, world, environment settings, episodes), not on the method, so every method of a seed
    shares them: with `store` (the cell store's root) they are stored once in the cache
    "incentive/references", keyed by everything they depend on, and read back by the other cells."""
    key = {
        "env": asdict(c.env),
        "env_seed": env.seed,
        "lam": c.lam,
        "alpha": c.alpha,
        "beta": c.beta,
        "nash_iters": c.asosa.nash_iters,
        "nash_tol": c.asosa.nash_tol,
        "episodes": c.asosa.eval_episodes,
        "zeta": eq.zeta.tolist(),
        "rewards": eq.rewards.tolist(),
        "world": [world.price_unit.tolist(), world.cost_scale, world.budget_unit],
        "E": E.tolist(),
    }
    path = REFERENCES.path(store, key, ".json") if store is not None else None
    stored = REFERENCES.read(path, lambda p: json.loads(p.read_text())) if path is not None else None
    if stored is not None:
        return {
            **stored,
            **{k: torch.tensor(stored[k], dtype=torch.float64) for k in _TENSORS if k in stored},
            **{k: np.asarray(stored[k], dtype=float) for k in _ARRAYS if k in stored},
        }
    out = compute(env, c, E, eq)
    if path is not None:
        plain = {k: (v.tolist() if isinstance(v, (torch.Tensor, np.ndarray)) else v) for k, v in out.items()}
        atomic_write_json(
            path,
            {
                **plain,
                "ne_converged": bool(out["ne_converged"]),
                "key": {**key, "version": REFERENCES.version},
            },
        )
    return out


def note(c: IncentiveConf) -> str:
    """What the references of a cell are, for its table."""
    if not c.env.remembers():
        return (
            "Nash references: in each round, the Nash equilibrium of that round's game on the evaluation "
            "episodes' workers; the rounds are independent here, so this path is an equilibrium of the "
            "whole episode. Welfare optimum: the best offer path of all LMOs."
        )
    return (
        "Nash references: in each round, the Nash equilibrium of that round's game given the workers' "
        "state on the realised episodes; workers remember here (today's offers move tomorrow's choices), "
        "so that is not the whole game: olbr_* compare with each LMO's best offer path over the episode "
        "against the others' per-round equilibrium offers (an open-loop best response), and "
        "ref_exploitability_pct says how much planning gains over the per-round reference."
    )
