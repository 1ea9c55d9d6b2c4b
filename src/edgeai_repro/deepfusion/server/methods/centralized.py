"""The upper bound: the MoE trained on the pooled device data (DeepSpeed-MoE in the paper's Fig. 9)."""

from __future__ import annotations

from dataclasses import dataclass

from edgeai_repro.deepfusion.planning.phases import Phase, Shape
from edgeai_repro.deepfusion.server.methods.base import Fused, Method, Server, epochs_to_steps, tune


@dataclass
class Centralized(Method):
    name: str = "centralized"
    needs_devices: bool = False
    traffic: str = "none"

    def __call__(self, s: Server) -> Fused:
        c = s.conf
        out = Fused()
        steps = epochs_to_steps(c.device.epochs, len(s.corpus.train), c.device.batch_size)
        out.model = tune(
            s,
            s.init_moe(),
            steps,
            s.corpus.train,
            freeze=False,
            label="centralized",
            lr=c.device.full_lr or c.device.lr,
            out=out,
            phase="server",
        )
        return out

    def phases(self, shape: Shape) -> list[Phase]:
        c = shape.conf
        steps = epochs_to_steps(c.device.epochs, c.data.train_samples, c.device.batch_size)
        return [shape.server_phase("training on the pooled device data", steps)]
