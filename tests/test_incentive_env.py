"""The LMO-worker environment and the MADDPG module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeai_repro.incentive.env import ACT_DIM, OBS_DIM, EnvConf, IncentiveEnv, World
from edgeai_repro.incentive.maddpg import MADDPG, PolicyConf, ReplayBuffer
from edgeai_repro.incentive.stackelberg import solve


@pytest.fixture
def env() -> IncentiveEnv:
    eq = solve(np.array([0.8, 1.0, 1.2, 6.0]), np.zeros(4), 10, 2, 1)  # the last LMO drops out
    conf = EnvConf()
    return IncentiveEnv(
        conf, eq.zeta, eq.rewards, World.from_equilibrium(conf, eq.zeta, eq.rewards), batch=3, seed=0
    )


def test_parallel_api(env: IncentiveEnv) -> None:
    obs, _infos = env.reset(seed=1)
    assert set(obs) == set(env.possible_agents) and all(o.shape == (OBS_DIM,) for o in obs.values())
    assert env.action_space("lmo_0").shape == (ACT_DIM,)
    for _t in range(env.conf.horizon):
        obs, rew, term, trunc, info = env.step({a: env.action_space(a).sample() for a in env.agents})
        assert set(rew) == set(term) == set(trunc) == set(info)
    assert all(term.values()) and env.agents == []


def test_dropouts_buy_nothing_and_choices_are_probabilities(env: IncentiveEnv) -> None:
    env.reset_batch()
    _, reward, _, info = env.step_batch(torch.full((3, 4, 2), 0.5))
    assert torch.all(info["data"][:, 3] == 0) and torch.all(reward[:, 3] == 0)
    total = env.choice.sum(-1)
    assert torch.all(total >= 0) and torch.all(total <= 1 + 1e-12)  # the rest stays out


def test_one_lmos_offer_changes_another_lmos_reward_in_the_same_step(env: IncentiveEnv) -> None:
    """The coupling: LMOs compete for one pool of workers."""
    env.reset_batch()
    base = torch.full((3, 4, 2), 0.5)
    richer = base.clone()
    richer[:, 0, 1] = 0.9  # LMO 0 raises its price
    before, after = env.preview(base), env.preview(richer)
    assert torch.all((after[:, 1] - before[:, 1]).abs() > 1e-9)  # LMO 1's reward moves with LMO 0's offer
    assert torch.all(
        env._round(richer)["data"][:, 1] < env._round(base)["data"][:, 1]
    )  # it loses workers to LMO 0
    private = IncentiveEnv(
        EnvConf(coupling="private"),
        env.targets.numpy(),
        env.rewards.numpy(),
        World.from_equilibrium(EnvConf(), env.targets.numpy(), env.rewards.numpy()),
        batch=3,
        seed=0,
    )
    private.reset_batch()
    assert torch.allclose(private.preview(base)[:, 1], private.preview(richer)[:, 1])  # the uncoupled reading


def test_learning_workers_choose_on_experience_and_learn_from_offers(env: IncentiveEnv) -> None:
    """worker_model=learning: workers are learning agents. Before any experience they choose
    uniformly whatever is offered; a better offer from LMO 0 raises its workers' attraction, so its
    share grows in the next round (not the same one), at the expense of the other LMOs."""
    conf = EnvConf(worker_model="learning", adapt_rate=0.5)
    learner = IncentiveEnv(
        conf,
        env.targets.numpy(),
        env.rewards.numpy(),
        World.from_equilibrium(conf, env.targets.numpy(), env.rewards.numpy()),
        batch=3,
        seed=0,
    )
    base = torch.full((3, 4, 2), 0.5)
    richer = base.clone()
    richer[:, 0, 1] = 0.9
    shares = {}
    for name, first in (("base", base), ("richer", richer)):
        learner.reset_batch()
        learner.step_batch(first)
        round1 = learner.choice.clone()
        learner.step_batch(base)  # everyone posts the same offers in round 2
        shares[name] = (round1, learner.choice.clone())
    assert torch.allclose(shares["base"][0], shares["richer"][0])  # round 1: no experience yet
    assert torch.allclose(shares["base"][0][..., :3], torch.full_like(shares["base"][0][..., :3], 1 / 4))
    assert torch.all(shares["richer"][1][..., 0].sum(1) > shares["base"][1][..., 0].sum(1))  # LMO 0 gains
    assert torch.all(shares["richer"][1][..., 1].sum(1) < shares["base"][1][..., 1].sum(1))  # LMO 1 loses


def test_preview_does_not_change_the_state(env: IncentiveEnv) -> None:
    env.reset_batch()
    before = env.collected.clone()
    env.preview(torch.rand(3, 4, 2))
    assert torch.equal(before, env.collected) and env.t == 0


def test_paying_more_buys_more_data(env: IncentiveEnv) -> None:
    env.reset_batch()
    low = env._round(torch.full((3, 4, 2), 0.2))["data"]
    high = env._round(torch.full((3, 4, 2), 0.6))["data"]
    assert torch.all(high[:, :3].sum(-1) >= low[:, :3].sum(-1)) and torch.any(high > low)


def test_equilibrium_solver_on_an_instance_with_a_known_equilibrium() -> None:
    """With private pools each LMO's problem is separate, so the Nash equilibrium is every LMO's own
    optimum: found here independently by brute force on a 101 x 101 grid. With a shared pool, the
    solver's equilibrium leaves no LMO a profitable deviation on that grid either."""
    from edgeai_repro.incentive import game

    eq = solve(np.array([0.8, 1.0, 1.2]), np.zeros(3), 10, 2, 1)
    fine = torch.linspace(0, 1, 101, dtype=torch.float64)
    grid = torch.cartesian_prod(fine, fine)
    for coupling in ("private", "shared"):
        conf = EnvConf(coupling=coupling)
        env = IncentiveEnv(
            conf, eq.zeta, eq.rewards, World.from_equilibrium(conf, eq.zeta, eq.rewards), batch=4, seed=1
        )
        workers = game.Stage.of(env)
        ne = game.nash(env, workers)
        assert ne.converged and ne.exploitability <= 1e-4
        for m in range(3):
            trial = ne.actions.unsqueeze(0).repeat(len(grid), 1, 1)
            trial[:, m] = grid
            brute = float(game.utilities(env, workers, trial)[:, m].max())
            assert ne.utility[m] >= brute - 1e-6 * max(1.0, abs(brute)), (coupling, m)
            if coupling == "private":  # the equilibrium offer is the brute-force optimum itself
                best = grid[int(game.utilities(env, workers, trial)[:, m].argmax())]
                assert torch.allclose(ne.actions[m], best, atol=0.01)


def test_welfare_optimum_is_at_least_the_equilibrium_welfare() -> None:
    from edgeai_repro.incentive import game

    eq = solve(np.array([0.8, 1.0, 1.2]), np.zeros(3), 10, 2, 1)
    conf = EnvConf()
    env = IncentiveEnv(
        conf, eq.zeta, eq.rewards, World.from_equilibrium(conf, eq.zeta, eq.rewards), batch=4, seed=2
    )
    workers = game.Stage.of(env)
    ne = game.nash(env, workers)
    _, best = game.stationary_welfare_optimum(env, workers, 10, 2, 1, [ne.actions])
    assert best >= float(game.stationary_welfare(env, workers, ne.actions.unsqueeze(0), 10, 2, 1)[0]) - 1e-9


def _batch(n: int, agents: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "obs": torch.randn(n, agents, OBS_DIM, generator=g),
        "act": torch.rand(n, agents, ACT_DIM, generator=g),
        "rew": torch.randn(n, agents, generator=g),
        "next_obs": torch.randn(n, agents, OBS_DIM, generator=g),
        "done": torch.zeros(n),
    }


@pytest.mark.parametrize("critic", ["centralized", "independent"])
def test_each_actor_learns_only_from_its_own_critic(critic: str) -> None:
    torch.manual_seed(0)
    m = MADDPG(3, PolicyConf(critic=critic))
    batch = _batch(32, 3)
    new = m.policy(batch["obs"])
    own = torch.eye(3, dtype=torch.bool).view(3, 1, 3, 1)
    joint = torch.where(own, new.unsqueeze(0), batch["act"].unsqueeze(0))
    q_in = (
        torch.cat([batch["obs"].flatten(-2).unsqueeze(0).expand(3, -1, -1), joint.flatten(-2)], -1)
        if critic == "centralized"
        else m._critic_in(batch["obs"], new)
    )
    q = m.critics[0](q_in)  # (A, B, 1)
    q[0].sum().backward()  # agent 0's objective
    grad = m.actor[0].weight.grad
    assert grad[0].abs().sum() > 0 and grad[1:].abs().sum() == 0


def test_critic_fits_a_fixed_batch() -> None:
    torch.manual_seed(0)
    m = MADDPG(2, PolicyConf())
    m._trainer = None
    actor_opt, critic_opt = (
        torch.optim.Adam(m.actor.parameters(), 1e-3),
        torch.optim.Adam(m.critics.parameters(), 3e-3),
    )
    m.manual_backward = lambda loss: loss.backward()
    batch = _batch(128, 2)
    first = m.update(batch, actor_opt, critic_opt)["critic_loss"]
    for _ in range(150):
        last = m.update(batch, actor_opt, critic_opt)["critic_loss"]
    assert last < 0.5 * first


def test_replay_buffer_wraps_around() -> None:
    buf = ReplayBuffer(10, 2, 4, torch.Generator().manual_seed(0))
    for _ in range(4):
        buf.push(
            torch.zeros(3, 2, OBS_DIM),
            torch.zeros(3, 2, ACT_DIM),
            torch.ones(3, 2),
            torch.zeros(3, 2, OBS_DIM),
            False,
        )
    assert buf.size == 10 and buf.pos == 2
    assert next(iter(buf))["rew"].shape == (4, 2)


def test_the_references_use_the_evaluation_episodes_workers() -> None:
    """A fresh evaluation environment's first reset draws the workers the evaluation meets; the
    equilibrium played on them scores its own reference utility (no gap)."""
    from edgeai_repro.incentive import game

    eq = solve(np.array([0.8, 1.0, 1.2]), np.zeros(3), 10, 2, 1)
    conf = EnvConf()
    make = lambda: IncentiveEnv(
        conf, eq.zeta, eq.rewards, World.from_equilibrium(conf, eq.zeta, eq.rewards), batch=4, seed=3
    )
    workers = game.Stage.of(make())
    evaluated = make()
    evaluated.reset_batch()
    assert torch.equal(workers.cost, evaluated.cost)
    ne = game.nash(make(), workers)
    env = make()
    env.reset_batch()
    total = torch.zeros(4, 3, dtype=torch.float64)
    for _ in range(conf.horizon):
        _, reward, _, _ = env.step_batch(ne.actions.float().unsqueeze(0).expand(4, -1, -1))
        total += reward.double()
    np.testing.assert_allclose(total.mean(0).numpy(), conf.horizon * ne.utility, rtol=1e-4)


def test_references_are_computed_once_per_game_and_shared(tmp_path, monkeypatch) -> None:
    """Every method of a seed plays the same game: its references are stored once and read back
    exactly (floats round-trip through JSON), without solving the game again."""
    from edgeai_repro.incentive import game, references
    from edgeai_repro.incentive.config import IncentiveConf

    c = IncentiveConf()
    c.asosa.nash_iters, c.asosa.eval_episodes, c.env.horizon = 5, 2, 3
    eq = solve(np.array([0.8, 1.0, 1.2]), np.zeros(3), c.lam, c.alpha, c.beta)
    world = World.from_equilibrium(c.env, eq.zeta, eq.rewards)
    make = lambda seed: IncentiveEnv(c.env, eq.zeta, eq.rewards, world, batch=2, seed=seed)
    first = references.references(make(7), c, np.zeros(3), eq, world, tmp_path)
    monkeypatch.setattr(game, "nash", lambda *a, **k: (_ for _ in ()).throw(AssertionError("solved twice")))
    again = references.references(make(7), c, np.zeros(3), eq, world, tmp_path)
    assert np.array_equal(first["lmo_ne"], again["lmo_ne"]) and torch.equal(first["path"], again["path"])
    assert first["welfare_opt"] == again["welfare_opt"] and first["exploitability"] == again["exploitability"]
    with pytest.raises(AssertionError, match="solved twice"):  # another game (episodes) is solved afresh
        references.references(make(8), c, np.zeros(3), eq, world, tmp_path)


def test_a_fit_of_n_batches_makes_n_updates_whatever_the_optimizers() -> None:
    """Lightning counts optimizer steps (two per MADDPG update, 1.5 for TD3 with its delayed actor):
    `updates` in the config are updates, for every algorithm alike."""
    from edgeai_repro.core.trainer import Trainers

    eq = solve(np.array([0.8, 1.0, 1.2]), np.zeros(3), 10, 2, 1)
    conf = EnvConf()
    env = IncentiveEnv(conf, eq.zeta, eq.rewards, World.from_equilibrium(conf, eq.zeta, eq.rewards), batch=4)
    for algorithm in ("maddpg", "td3"):
        pconf = PolicyConf(algorithm=algorithm, batch_size=8, buffer_size=64)
        module = MADDPG(3, pconf)
        gen = torch.Generator().manual_seed(0)
        module.attach(env, ReplayBuffer(64, 3, 8, gen), gen)
        module.collect(4, noise=None)
        Trainers().fit(module, batches=7)
        assert module.updates == 7, algorithm
