"""What a method trains, as the run plan (plan.py) sees it: its phases, and the cell's shapes they
depend on. Data only: every method module declares its phases with these (Method.phases) without
importing the planner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Phase:
    """One training phase of a method: what trains and how much."""

    key: str  # what the training code asks Setup.batching for: device:<type>, distill, tune, server, ...
    label: str
    model: str  # the model's name as the table shows it
    config: Any  # its transformers config at the cell's scale
    mode: str  # full | lora | qlora
    batch: int  # samples per optimizer step (the configured batch)
    steps: int  # optimizer steps over the cell (every run of the phase together)
    runs: int = 1  # models trained in the phase (devices of a type, domains, FedJETS' local trainings)
    shared: bool = False  # trained once per (case, N, seed) and shared by every method (the devices)


@dataclass(frozen=True)
class Forward:
    """Forward-only work of a cell (no gradient): `tokens` tokens through `config`'s model."""

    label: str
    config: Any
    tokens: float


def teacher_forwards(shape: Shape, each_device: bool) -> list[Forward]:
    """The teachers' passes over the public data that make the distillation targets: every device's
    model (each_device: FedMKT), or K cluster teachers (DeepFusion, OFA-KD), whose model types the
    clustering decides at run time: counted in proportion to the devices' types."""
    s, c = shape.setup, shape.conf
    tokens = c.data.public_samples * c.data.max_len
    n, k = len(s.types), (1 if each_device else shape.moe_config.num_experts)
    per_type = {t: s.types.count(t) * (1 if each_device else k / n) for t in dict.fromkeys(s.types)}
    return [Forward(f"teacher targets ({t})", s.model_config(t), tokens * m) for t, m in per_type.items()]


def server_budget(moe_config, conf, steps: int | None = None) -> int:
    """Server optimizer steps of a learning baseline: its own `steps`, or DeepFusion's (K domains x
    kd.steps of distillation + tune.steps of Phase III)."""
    return int(steps) if steps else moe_config.num_experts * conf.kd.steps + conf.tune.steps


@dataclass
class Shape:
    """What a method's phases depend on: the cell's setup and its global MoE's config."""

    setup: Any
    moe_config: Any
    budget_steps: int | None = None

    @property
    def conf(self):
        return self.setup.conf

    @property
    def budget(self) -> int:
        return server_budget(self.moe_config, self.conf, self.budget_steps)

    @property
    def moe_name(self) -> str:
        return f"{self.setup.case.moe} ({self.moe_config.num_experts} experts, top-{self.moe_config.num_experts_per_tok})"

    def server_phase(self, label: str, steps: int | None = None) -> Phase:
        """The whole global MoE trained on the server (FedMKT, server_only, centralised), at the
        server's batch, for `steps` (default: DeepFusion's server budget)."""
        return Phase(
            "server",
            label,
            self.moe_name,
            self.moe_config,
            "full",
            self.conf.kd.batch_size,
            self.budget if steps is None else steps,
        )
