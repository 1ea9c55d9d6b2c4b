"""The floor: the global MoE trained on the server's public data alone, no devices."""

from __future__ import annotations

from dataclasses import dataclass

from edgeai_repro.deepfusion.planning.phases import Phase, Shape
from edgeai_repro.deepfusion.server.methods.base import Fused, Method, Server, tune


@dataclass
class ServerOnly(Method):
    """The global MoE trained on the server's public data alone, for DeepFusion's step budget:
    what the server knows without any device (the floor for "knowledge reached it from the devices")."""

    name: str = "server_only"
    needs_devices: bool = False
    traffic: str = "none"

    def __call__(self, s: Server) -> Fused:
        out = Fused(metrics={"server_steps": float(s.budget)})
        out.model = tune(
            s,
            s.init_moe(),
            s.budget,
            s.corpus.public,
            freeze=False,
            label="server_only",
            lr=s.conf.kd.lr,
            out=out,
            phase="server",
        )
        return out

    def phases(self, shape: Shape) -> list[Phase]:
        return [shape.server_phase("training on the public data")]
