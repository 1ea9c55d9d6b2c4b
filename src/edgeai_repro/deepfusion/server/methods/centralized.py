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
        # A centralised trainer holds the pooled data, so it holds out part of it for its step
        # selection (the device-side rule: validation on the devices' own records), as many records
        # as the server's public validation set; it trains on the rest.
        c = s.conf
        out = Fused()
        held = c.data.val_samples
        train, val = s.corpus.train[:-held], s.corpus.train[-held:]
        steps = epochs_to_steps(c.device.epochs, len(train), c.device.batch_size)
        out.model = tune(
            s,
            s.init_moe(),
            steps,
            train,
            freeze=False,
            label="centralized",
            lr=c.device.full_lr or c.device.lr,
            out=out,
            phase="server",
            val=val,
        )
        return out

    def phases(self, shape: Shape) -> list[Phase]:
        c = shape.conf
        steps = epochs_to_steps(
            c.device.epochs, c.data.train_samples - c.data.val_samples, c.device.batch_size
        )
        return [shape.server_phase("training on the pooled device data", steps)]
