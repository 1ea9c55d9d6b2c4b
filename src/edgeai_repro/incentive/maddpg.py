"""MADDPG (centralised critics, decentralised actors) as a LightningModule with manual optimisation.

All agents' networks are stacked into one ensemble (weights of shape (agents, in, out)), so one
batched matrix product updates every agent at once: that is what makes hundreds of agent updates
per second possible on two CPU cores. `critic: independent` gives independent DDPG learners (each
critic sees only its own observation and action); `algorithm: td3` adds twin critics, target
smoothing and delayed actor updates.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from edgeai_repro.incentive.config import PolicyConf
from edgeai_repro.incentive.env import ACT_DIM, OBS_DIM, IncentiveEnv


class EnsembleLinear(nn.Module):
    def __init__(self, n: int, fin: int, fout: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(fin)
        self.weight = nn.Parameter(torch.empty(n, fin, fout).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, fout).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, B, fin) -> (n, B, fout)
        return torch.baddbmm(self.bias, x, self.weight)


def ensemble_mlp(n: int, fin: int, hidden: int, fout: int) -> nn.Sequential:
    return nn.Sequential(
        EnsembleLinear(n, fin, hidden),
        nn.ReLU(),
        EnsembleLinear(n, hidden, hidden),
        nn.ReLU(),
        EnsembleLinear(n, hidden, fout),
    )


def actions_of(actor: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """An ensemble actor's offers in [0, 1]: obs (B, A, OBS) -> (B, A, ACT)."""
    return torch.sigmoid(actor(obs.transpose(0, 1)).transpose(0, 1))


class ReplayBuffer(IterableDataset):
    """A ring buffer of joint transitions; iterating it yields random mini-batches forever."""

    def __init__(self, capacity: int, n_agents: int, batch_size: int, gen: torch.Generator) -> None:
        self.capacity, self.batch_size, self.gen = capacity, batch_size, gen
        self.obs = torch.zeros(capacity, n_agents, OBS_DIM)
        self.act = torch.zeros(capacity, n_agents, ACT_DIM)
        self.rew = torch.zeros(capacity, n_agents)
        self.next_obs = torch.zeros(capacity, n_agents, OBS_DIM)
        self.done = torch.zeros(capacity)
        self.size = self.pos = 0

    def push(
        self, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor, next_obs: torch.Tensor, done: bool
    ) -> None:
        n = obs.shape[0]
        idx = (self.pos + torch.arange(n)) % self.capacity
        self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx] = obs, act, rew, next_obs
        self.done[idx] = float(done)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (self.batch_size,), generator=self.gen)
        return {
            "obs": self.obs[idx],
            "act": self.act[idx],
            "rew": self.rew[idx],
            "next_obs": self.next_obs[idx],
            "done": self.done[idx],
        }

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.sample()


def optimizers(module: MADDPG) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam for the actors and for the critics; the fused kernel updates all of an ensemble's tensors
    in one call, which matters at these sizes (the optimizer step is a large share of an update):
    1,070 agent-updates/s against 920 with the multi-tensor (foreach) kernels on 2 cores."""
    return (
        torch.optim.Adam(module.actor.parameters(), lr=module.conf.actor_lr, fused=True),
        torch.optim.Adam(module.critics.parameters(), lr=module.conf.critic_lr, fused=True),
    )


class MADDPG(L.LightningModule):
    def __init__(self, n_agents: int, conf: PolicyConf, reward_scale: torch.Tensor | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.conf, self.n = conf, n_agents
        critic_in = n_agents * (OBS_DIM + ACT_DIM) if conf.critic == "centralized" else OBS_DIM + ACT_DIM
        self.actor = ensemble_mlp(n_agents, OBS_DIM, conf.hidden, ACT_DIM)
        self.critics = nn.ModuleList(
            [
                ensemble_mlp(n_agents, critic_in, conf.hidden, 1)
                for _ in range(2 if conf.algorithm == "td3" else 1)
            ]
        )
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critics_target = copy.deepcopy(self.critics).requires_grad_(False)
        # rewards are in currency units that differ by LMO; learning sees them divided by this
        self.register_buffer(
            "reward_scale", reward_scale if reward_scale is not None else torch.ones(n_agents)
        )
        self.env: IncentiveEnv | None = None
        self.buffer: ReplayBuffer | None = None
        self.episode_returns: list[float] = []
        self._window: dict[str, list[float]] = {}
        self.updates = 0
        self._optimizer_states: list[dict] = []
        self.keep_optimizer_state = False

    # -- acting --
    def logits(self, obs: torch.Tensor, target: bool = False) -> torch.Tensor:
        net = self.actor_target if target else self.actor
        return net(obs.transpose(0, 1)).transpose(0, 1)

    def policy(self, obs: torch.Tensor, target: bool = False) -> torch.Tensor:
        """obs (B, A, OBS) -> actions (B, A, ACT) in [0, 1]."""
        return torch.sigmoid(self.logits(obs, target))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: float, gen: torch.Generator | None = None) -> torch.Tensor:
        a = self.policy(obs)
        if noise > 0:
            a = a + noise * torch.randn(a.shape, generator=gen)
        return a.clamp(0, 1)

    def _critic_in(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        if self.conf.critic == "centralized":
            joint = torch.cat([obs.flatten(-2), act.flatten(-2)], dim=-1)  # (..., B, A*(o+a))
            return joint.unsqueeze(0).expand(self.n, *joint.shape) if joint.dim() == 2 else joint
        return torch.cat([obs, act], dim=-1).transpose(0, 1)  # (A, B, o+a)

    # -- data --
    def attach(self, env: IncentiveEnv, buffer: ReplayBuffer, gen: torch.Generator) -> None:
        self.env, self.buffer, self.gen = env, buffer, gen
        self._obs = env.reset_batch()
        self._ret = torch.zeros(env.batch, self.n)

    def collect(self, steps: int, noise: float | None) -> None:
        """Step the vectorised env; noise None means uniform random actions (warm-up)."""
        env, buf = self.env, self.buffer
        for _ in range(steps):
            if noise is None:
                act = torch.rand(self._obs.shape[0], self.n, ACT_DIM, generator=self.gen)
            else:
                act = self.act(self._obs, noise, self.gen)
            next_obs, rew, done, _ = env.step_batch(act)
            buf.push(self._obs, act, rew / self.reward_scale.cpu(), next_obs, done)
            self._ret += rew
            self._obs = next_obs
            if done:
                self.episode_returns.append(float(self._ret.sum(-1).mean()))
                self._ret.zero_()
                self._obs = env.reset_batch()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.buffer, batch_size=None)

    def configure_optimizers(self):
        opts = optimizers(self)
        # With keep_optimizer_state (asosa.warm_replay) a later fit, ASOSA's next outer iteration,
        # resumes the Adam moments of the last one instead of restarting them.
        for opt, state in zip(opts, self._optimizer_states, strict=False):
            opt.load_state_dict(state)
        return opts

    def on_train_end(self) -> None:
        if self.keep_optimizer_state:
            self._optimizer_states = [opt.state_dict() for opt in self.trainer.optimizers]

    # -- learning --
    def update(self, batch: dict[str, torch.Tensor], actor_opt, critic_opt) -> dict[str, float]:
        c = self.conf
        obs, act, rew, next_obs, done = (
            batch["obs"],
            batch["act"],
            batch["rew"],
            batch["next_obs"],
            batch["done"],
        )
        with torch.no_grad():
            next_act = self.policy(next_obs, target=True)
            if c.algorithm == "td3":
                next_act = (next_act + c.target_noise * torch.randn_like(next_act)).clamp(0, 1)
            q_next = torch.stack([q(self._critic_in(next_obs, next_act)) for q in self.critics_target]).amin(
                0
            )
            y = rew.T.unsqueeze(-1) + c.gamma * (1 - done).view(1, -1, 1) * q_next
        critic_in = self._critic_in(obs, act)
        critic_loss = sum(nn.functional.mse_loss(q(critic_in), y) for q in self.critics) * self.n
        critic_opt.zero_grad()
        self.manual_backward(critic_loss)
        critic_opt.step()
        stats = {"critic_loss": float(critic_loss.detach()) / self.n}
        if c.algorithm != "td3" or self.updates % c.policy_delay == 0:
            logits = self.logits(obs)
            new = torch.sigmoid(logits)
            if c.critic == "centralized":
                own = torch.eye(self.n, dtype=torch.bool).view(self.n, 1, self.n, 1)
                joint = torch.where(
                    own, new.unsqueeze(0), act.unsqueeze(0)
                )  # (A, B, A, ACT): only my action is new
                q_in = torch.cat(
                    [obs.flatten(-2).unsqueeze(0).expand(self.n, -1, -1), joint.flatten(-2)], dim=-1
                )
            else:
                q_in = self._critic_in(obs, new)
            # The small logit penalty keeps the sigmoid out of saturation, where the actor's gradient
            # vanishes and a policy that stopped trading could never start again.
            # The critic is frozen for the actor's step: backward then skips the critic's weight
            # gradients, which the actor's update never uses (a third of its cost).
            self.critics.requires_grad_(False)
            actor_loss = (-self.critics[0](q_in).mean() + c.logit_penalty * logits.pow(2).mean()) * self.n
            actor_opt.zero_grad()
            self.manual_backward(actor_loss)
            self.critics.requires_grad_(True)
            actor_opt.step()
            stats["actor_loss"] = float(actor_loss.detach()) / self.n
            with torch.no_grad():
                for net, tgt in ((self.actor, self.actor_target), (self.critics, self.critics_target)):
                    torch._foreach_lerp_(list(tgt.parameters()), list(net.parameters()), c.polyak)
        self.updates += 1
        return stats

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        noise = self.conf.explore_std * self.conf.explore_decay**self.updates
        self.collect(self.conf.steps_per_update, noise)
        actor_opt, critic_opt = self.optimizers()
        stats = self.update(batch, actor_opt, critic_opt)
        # Lightning's self.log costs about as much as a third of an update, so the losses are averaged
        # here and handed to it once per logging interval (the curve is the same, at that interval).
        for k, v in stats.items():
            self._window.setdefault(k, []).append(v)
        every = max(int(getattr(self.trainer, "log_every_n_steps", 1) or 1), 1)
        if (batch_idx + 1) % every == 0 or batch_idx + 1 == self.trainer.num_training_batches:
            means = {f"train/{k}": sum(v) / len(v) for k, v in self._window.items()}
            if self.episode_returns:
                means["train/episode_return"] = self.episode_returns[-1]
            self.log_dict(means, on_step=True, prog_bar=False)
            self._window.clear()
