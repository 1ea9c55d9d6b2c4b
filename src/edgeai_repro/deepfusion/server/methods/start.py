"""Reference row `start`: the shared initial global MoE every method starts from (the pretrained
checkpoint at paper scale; its tiny stand-in, pre-trained on the public data, at tiny scale), scored
with no further training. A method that ends above it made the model worse."""

from __future__ import annotations

from dataclasses import dataclass

from edgeai_repro.deepfusion.server.methods.base import Fused, Reference, Server


@dataclass
class Start(Reference):
    name: str = "start"

    def __call__(self, s: Server) -> Fused:
        return Fused(s.init_moe(), metrics={"server_steps": 0.0})
