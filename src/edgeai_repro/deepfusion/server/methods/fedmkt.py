"""FedMKT (the paper's "FedKMT"): the global MoE distils the devices' final logits on the public
data, token-aligned, picking per sample the device with the lowest answer loss."""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.deepfusion.accounting import comm
from edgeai_repro.deepfusion.planning.phases import Forward, Phase, Shape, teacher_forwards
from edgeai_repro.deepfusion.server.distill import Distiller, KDDataset, kd_loader
from edgeai_repro.deepfusion.server.methods.base import Fused, Method, Server


@dataclass
class FedMKT(Method):
    """Devices send their top-k next-token distributions on the public data (FedMKT's exchange;
    the server computes them here from the uploads, which gives the same numbers); the global MoE
    distils them, per sample from the device with the lowest answer loss. Traffic: what is sent,
    an fp16 probability and an int32 token id per kept entry (the reverse, server-to-device
    direction of FedMKT's mutual transfer is not run, so not counted)."""

    name: str = "fedmkt"
    traffic: str = "logits"

    def __call__(self, s: Server) -> Fused:
        kd = replace(s.kd, kd="none", steps=s.budget)
        ds = KDDataset(s.corpus.public, s.moe_tok, kd.max_len)
        sent = 0
        for d in s.devices:
            s.add_targets(ds, [d], kd, with_features=False)
            sent += sum(item["targets"][-1]["ids"].numel() for item in ds.items) * (2 + 4)
        for item in ds.items:  # FedMKT's selection: the device whose answer loss on this sample is lowest
            item["pick"] = min(range(len(item["targets"])), key=lambda j: item["targets"][j]["ce"])
        model = s.init_moe()
        module = Distiller(model, kd)
        micro, accum = s.setup.batching("server", kd.batch_size)
        chosen = s.fit(
            module, kd_loader(ds, micro, derive_seed("fedmkt", s.seed) % 2**62), kd.steps, accum, select=model
        )
        return Fused(
            model,
            metrics={"comm_gb": sent / comm.GB, "server_steps": float(chosen)},
            curves=[
                {"method": "fedmkt", "curve": f"L_{k}", "step": i, "value": h[k]}
                for i, h in enumerate(module.history)
                for k in ("ce", "kl")
            ],
        )

    def phases(self, shape: Shape) -> list[Phase]:
        return [shape.server_phase("distillation of the devices' logits")]

    def forwards(self, shape: Shape) -> list[Forward]:
        return teacher_forwards(shape, each_device=True)  # every device's logits on the public data
