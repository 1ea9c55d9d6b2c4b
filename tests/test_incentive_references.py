"""The incentive references describe the game actually played: per round on the realised episodes,
open-loop over whole offer paths when workers remember; each LMO's gap and the exploitability of a
joint policy; the shared pool; ASOSA judged on its last game; the last logged row reaches the CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import launch, load_script
from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.trainer import Trainers
from edgeai_repro.incentive import asosa, game, policies, references
from edgeai_repro.incentive.config import IncentiveConf
from edgeai_repro.incentive.env import IncentiveEnv, World
from edgeai_repro.incentive.episodes import evaluate, path_behaviour, rollout
from edgeai_repro.incentive.stackelberg import solve

P = np.array([0.8, 1.0, 1.2])


def small(**env) -> tuple[IncentiveConf, IncentiveEnv, object, World]:
    """Three LMOs, four rounds, three evaluation episodes: a game solved in a second."""
    c = IncentiveConf()
    c.env.horizon, c.asosa.nash_iters, c.asosa.eval_episodes = 4, 60, 3
    for key, value in env.items():
        setattr(c.env, key, value)
    eq = solve(P, np.zeros(3), c.lam, c.alpha, c.beta)
    world = World.from_equilibrium(c.env, eq.zeta, eq.rewards)
    return c, IncentiveEnv(c.env, eq.zeta, eq.rewards, world, batch=3, seed=5), eq, world


def test_without_drift_or_memory_the_per_round_reference_is_the_one_round_equilibrium() -> None:
    """Solved afresh in every round, the reference is the stationary equilibrium of the one-round game
    on the evaluation workers, and the episode pays each LMO H times its one-round utility."""
    c, env, _eq, _ = small()
    path, worst, converged, _ = references.stage_nash_path(env, c, every_round=True)
    ne = game.nash(env, game.Stage.of(env), tol=c.asosa.nash_tol, max_iters=c.asosa.nash_iters)
    assert converged and worst <= c.asosa.nash_tol
    assert torch.allclose(path, ne.actions.expand_as(path), atol=1e-4)
    played = evaluate(env, path_behaviour(path), np.zeros(3), c)
    np.testing.assert_allclose(played.lmo, c.env.horizon * ne.utility, rtol=1e-5, atol=1e-9)
    quick, *_ = references.stage_nash_path(env, c)  # solved once, the same path
    assert torch.allclose(quick, path, atol=1e-4)


def test_with_drifting_costs_the_reference_follows_the_realised_episode() -> None:
    """With drift every round is another game: the per-round equilibria differ, and the round-0
    equilibrium kept for the whole episode (the old reference) is not an equilibrium of it."""
    c, env, eq, _ = small(cost_drift=0.3)
    path, worst, converged, _ = references.stage_nash_path(env, c)
    assert converged and worst <= c.asosa.nash_tol
    assert float((path[-1] - path[0]).abs().max()) > 1e-3
    stale = path[0].expand_as(path).clone()
    gains = references.exploitability(env, path_behaviour(stale), c, np.zeros(3), eq.rewards)
    fresh = references.exploitability(env, path_behaviour(path), c, np.zeros(3), eq.rewards)
    assert np.nanmax(fresh) < 0.05 < np.nanmax(gains)


def test_the_equilibrium_method_plays_its_reference_under_drift() -> None:
    """The issue's bar: with cost_drift=0.2 the `equilibrium` method's gap to its reference is within
    0.5% (it plays it) and nobody can gain by deviating from it; a fixed offer is exploitable."""
    c = IncentiveConf()
    c.env.cost_drift, c.env.horizon = 0.2, 4
    c.asosa.max_iters, c.asosa.updates_first, c.asosa.updates_warm = 1, 10, 5
    c.asosa.eval_episodes, c.asosa.nash_iters = 3, 60
    c.method = {"_target_": "edgeai_repro.incentive.policies.Equilibrium", "name": "equilibrium"}
    rec = asosa.run(c, 0)["records"][0]
    gaps = [rec[f"gap_lmo{i}_pct"] for i in range(1, 6) if not np.isnan(rec[f"gap_lmo{i}_pct"])]
    assert max(abs(g) for g in gaps) < 0.5 and abs(rec["nash_gap_pct"]) < 0.5
    assert rec["exploitability_pct"] < 0.5
    c.method = {"_target_": "edgeai_repro.incentive.policies.Fixed", "name": "constant_price", "share": 0.0}
    fixed = asosa.run(c, 0)["records"][0]
    assert fixed["exploitability_pct"] > 1.0 and fixed["nash_gap_worst_lmo_pct"] > 1.0


def test_a_deviation_is_scored_through_the_other_lmos_reactions() -> None:
    """The best response's gradient flows through the others' policies: with followers that copy
    the others' last price, the autograd gradient of LMO 0's payoff in its first price equals the
    finite difference of the whole episode (which includes the followers' reaction)."""
    from edgeai_repro.incentive.episodes import parties

    c, env, _eq, _ = small()

    def followers(env: IncentiveEnv, obs: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.full_like(obs[..., 0], 0.2), obs[..., 6]], dim=-1)  # copy the others' price

    mask = torch.tensor([[True, False, False]])

    def payoff(x: torch.Tensor) -> torch.Tensor:
        override = torch.zeros(1, c.env.horizon, 3, 2, dtype=torch.float64)
        override[0, :, 0] = x
        return parties(rollout(env, followers, override, mask), c, torch.zeros(3))["payoff"].mean(1)[0, 0]

    x = torch.full((c.env.horizon, 2), 0.4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(payoff(x), x)
    h = 1e-5
    bumped = x.detach().clone()
    bumped[0, 1] += h
    lowered = x.detach().clone()
    lowered[0, 1] -= h
    numeric = (float(payoff(bumped)) - float(payoff(lowered))) / (2 * h)
    assert abs(float(grad[0, 1]) - numeric) < 1e-3 * max(1.0, abs(numeric))
    detached = lambda env, obs: followers(env, obs).detach()
    override = torch.zeros(1, c.env.horizon, 3, 2, dtype=torch.float64)
    override[0, :, 0] = x
    value = parties(rollout(env, detached, override, mask), c, torch.zeros(3))["payoff"].mean(1)[0, 0]
    (blind,) = torch.autograd.grad(value, x)
    assert abs(float(blind[0, 1]) - float(grad[0, 1])) > 1e-6  # the reaction matters to the gradient


def test_when_workers_remember_the_table_adds_each_lmos_best_offer_path() -> None:
    """Loyal workers make today's offer move tomorrow's choices: the note says the per-round game is
    not the whole game, and each LMO's best offer path against the others' per-round equilibrium
    reaches at least the reference's utility (planning can only add)."""
    c, env, eq, _ = small(switching_cost=0.5)
    out = references.compute(env, c, np.zeros(3), eq)
    assert not out["whole_game"] and "not the whole game" in references.note(c)
    assert np.all(out["lmo_olbr"] >= out["lmo_ne"] - 1e-12) and out["ref_exploitability_pct"] >= 0
    _, quiet, _, _ = small()
    assert "whole episode" in references.note(IncentiveConf()) and "lmo_olbr" not in references.compute(
        quiet, c, np.zeros(3), eq
    )


def test_the_welfare_optimum_is_at_least_the_welfare_of_the_nash_path() -> None:
    c, env, eq, _ = small()
    out = references.compute(env, c, np.zeros(3), eq)
    nash = evaluate(env, path_behaviour(out["path"]), np.zeros(3), c)
    assert out["welfare_opt"] >= nash.total - 1e-9


def test_eight_lmos_share_a_pool_of_twenty_workers() -> None:
    c = IncentiveConf()
    c.lmos, c.env.pool_size = 8, 20
    c.asosa.max_iters, c.asosa.updates_first, c.asosa.updates_warm = 1, 10, 5
    c.asosa.eval_episodes, c.asosa.nash_iters = 2, 20
    c.policy.warmup, c.policy.batch_size = 64, 32
    c.check("incentive")
    out = asosa.run(c, 0)
    rec = out["records"][0]
    assert np.isfinite(rec["exploitability_pct"]) and "gap_lmo8_pct" in rec
    eq = solve(np.linspace(0.6, 1.0, 8), np.zeros(8), c.lam, c.alpha, c.beta)
    env = IncentiveEnv(c.env, eq.zeta, eq.rewards, World.from_equilibrium(c.env, eq.zeta, eq.rewards))
    # every worker may serve every LMO still active after stage 1
    assert (
        env.n_workers == 20
        and bool(env.reach[:, eq.active].all())
        and not bool(env.reach[:, ~eq.active].any())
    )


def test_private_quotas_give_each_lmo_its_own_workers() -> None:
    c = IncentiveConf()
    c.env.pool_size, c.env.coupling, c.env.quotas = 12, "private", [2, 3, 4, 1, 1]
    c.check("incentive")
    eq = solve(np.array([0.8, 0.9, 1.0, 1.1, 1.2]), np.zeros(5), c.lam, c.alpha, c.beta)
    env = IncentiveEnv(c.env, eq.zeta, eq.rewards, World.from_equilibrium(c.env, eq.zeta, eq.rewards))
    served = env.reach.sum(0).tolist()
    assert served == [q if a else 0 for q, a in zip([2, 3, 4, 1, 1], eq.active, strict=True)]
    assert not bool(env.reach[-1].any())  # the worker beyond the quotas serves no one


@pytest.mark.parametrize(
    "settings,key",
    [
        ({"lmos": 8, "env.pool_size": 5}, "incentive.env.pool_size"),
        (
            {"env.coupling": "private", "env.pool_size": 10, "env.quotas": [5, 5, 5, 5, 5]},
            "incentive.env.quotas",
        ),
        ({"env.quotas": [2, 2, 2, 2, 2]}, "incentive.env.quotas"),
        ({"env.coupling": "private", "env.quotas": [2, 2]}, "incentive.env.quotas"),
        ({"env.cost_drift": -0.1}, "incentive.env.cost_drift"),
        ({"asosa.nash_tol": 0.0}, "incentive.asosa.nash_tol"),
    ],
)
def test_bad_pools_drifts_and_tolerances_are_one_sentence(settings: dict, key: str) -> None:
    from edgeai_repro.core.schema import check_all

    c = IncentiveConf()
    c.asosa.max_iters = 1
    for path, value in settings.items():
        obj, *_ = c, None
        parts = path.split(".")
        for part in parts[:-1]:
            obj = getattr(obj, part)
        setattr(obj, parts[-1], value)
    with pytest.raises(ConfigError) as err:
        check_all(c, "incentive")
    message = str(err.value)
    assert key in message and message.count(". ") == 0 and message.endswith("."), message


def test_a_pool_smaller_than_the_lmos_exits_1_with_one_line(workdir: Path) -> None:
    bad = launch(
        ["task=incentive_asosa", "scale=smoke", "incentive.lmos=8", "incentive.env.pool_size=5"], workdir
    )
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert (
        lines[-1].startswith("error: ")
        and "incentive.env.pool_size" in lines[-1]
        and "Traceback" not in bad.stderr
    )
    assert not (workdir / "outputs").exists() or not list((workdir / "outputs").rglob("result.json"))


def test_the_last_asosa_iteration_reaches_the_metrics_csv(workdir: Path) -> None:
    """The CSV logger buffers rows until it is saved: the cell closes its loggers, so the last
    iteration logged after the last Trainer is in metrics.csv."""
    run = launch(["task=incentive_asosa", "scale=smoke", "incentive.asosa.exploitability=false"], workdir)
    assert run.returncode == 0, run.stderr[-2000:]
    (result,) = [p for p in (workdir / "outputs").rglob("result.json") if (p.parent / "csv").is_dir()]
    record = json.loads(result.read_text())["records"][0]
    metrics = pd.read_csv(result.parent / "csv" / "metrics.csv")
    logged = metrics["asosa/fixed_point_residual"].dropna()
    assert len(logged) == record["iterations"]
    assert logged.iloc[-1] == pytest.approx(record["fixed_point_residual"])


def exact_loop(**asosa_settings) -> dict:
    """ASOSA's outer loop with the exact stage-2 solver (the per-round Nash offers) in place of the
    learners, fed back by delivery, on a small 5-LMO game with the mean-target cost scale."""
    c = IncentiveConf()
    c.method = policies.Equilibrium(name="equilibrium", outer_loop=True)
    c.env.horizon, c.env.cost_scale = 3, "mean_target"
    c.asosa.feedback, c.asosa.max_step = "delivery", 0.25
    c.asosa.max_iters, c.asosa.eval_episodes, c.asosa.nash_iters, c.asosa.exploitability = 20, 2, 40, False
    for key, value in asosa_settings.items():
        setattr(c.asosa, key, value)
    return asosa.run(c, 0)


def residuals(out: dict) -> list[float]:
    return [r["value"] for r in out["curves"] if r["curve"] == "fixed_point_residual"]


def test_with_the_exact_stage2_solver_the_outer_loop_reaches_its_fixed_point() -> None:
    tol = IncentiveConf().asosa.tol
    out = exact_loop()
    rec, path = out["records"][0], residuals(out)
    assert rec["converged"] == 1.0 and rec["fixed_point_residual"] < tol
    assert path[0] > 4 * tol  # the first game is not already the fixed point
    # Frozen at the first game, the same solver stays where it started: the loop closed the gap.
    assert residuals(exact_loop(freeze_stage1=True, max_iters=2)) == pytest.approx([path[0]] * 2)


def test_one_noisy_measurement_moves_a_unit_cost_by_at_most_the_cap() -> None:
    P = np.array([1.0, 2.0])
    assert asosa.step(P, np.array([15.0, 0.01]), eta=0.5, max_step=0.25) == pytest.approx([1.25, 2.0 / 1.25])
    assert asosa.step(P, np.array([15.0, 0.01]), eta=0.5, max_step=None) == pytest.approx([8.0, 1.005])


def test_the_noise_floor_is_the_spread_of_each_lmos_ratio_around_its_own_mean() -> None:
    floor = load_script("asosa_noise_floor").floor
    steady = pd.DataFrame(
        [
            {"seed": s, "step": k, "lmo": i, "value": 0.5 + i}
            for s in (1, 2)
            for k in (1, 2, 3)
            for i in (0, 1)
        ]
    )
    assert floor(steady)["floor"] == pytest.approx(0.0)  # far from 1, but steady: no noise
    noisy = steady.assign(value=steady["value"] * np.where(steady["step"] == 3, 1.2, 0.8))
    noisy.loc[noisy["step"] == 1, "value"] = 50.0  # the cold first iteration is left out
    assert floor(noisy)["floor"] == pytest.approx(0.2)


def test_the_mean_target_cost_scale_is_not_set_by_the_smallest_target() -> None:
    c = IncentiveConf()
    targets, rewards = np.array([0.01, 2.0, 4.0]), np.array([0.01, 2.0, 4.0])  # v0 = 1 for all
    per_lmo = World.from_equilibrium(c.env, targets, rewards).cost_scale
    c.env.cost_scale = "mean_target"
    mean = World.from_equilibrium(c.env, targets, rewards).cost_scale
    w = c.env.pool(3) / 3
    assert mean == pytest.approx(c.env.horizon * w / targets.mean())
    assert per_lmo > 30 * mean


def test_warm_replay_keeps_one_buffer_and_the_adam_moments_across_iterations() -> None:
    c, env, _eq, _world = small()
    c.asosa.warm_replay = True
    c.policy.warmup, c.policy.envs = 16, 2
    learner = asosa.Learner(c, policies.Learned(name="asosa"), 0, Trainers())
    learner.train(env, 5, 0)
    buffer, moments = learner.buffer, learner.module._optimizer_states
    size = buffer.size
    learner.train(env, 5, 1)
    assert learner.buffer is buffer and buffer.size > size and moments
    step = [s["state"][0]["step"] for s in learner.module._optimizer_states]
    assert all(int(v) == 10 for v in step)  # Adam counted on from the first fit's 5 steps
