"""OFA-KD (Hao et al. 2023) as a baseline: DeepFusion's pipeline with OFA-KD's feature-to-logit
distillation instead of VAA, so it has DeepFusion's server budget by construction."""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgeai_repro.deepfusion.planning.phases import Forward, Phase, Shape, teacher_forwards
from edgeai_repro.deepfusion.server.methods.base import Fused, Method, Server
from edgeai_repro.deepfusion.server.methods.deepfusion import fuse, fuse_phases


@dataclass
class OFAKD(Method):
    name: str = "ofa_kd"

    def __call__(self, s: Server) -> Fused:
        return fuse(s, "ofa_kd", replace(s.kd, kd="ofa"))

    def phases(self, shape: Shape) -> list[Phase]:
        return fuse_phases(shape)  # DeepFusion's pipeline (OFA's branches are a few linear layers)

    def forwards(self, shape: Shape) -> list[Forward]:
        return teacher_forwards(shape, each_device=False)  # DeepFusion's cluster teachers
