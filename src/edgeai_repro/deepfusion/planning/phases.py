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
