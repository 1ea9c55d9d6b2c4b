"""DeepFusion (the paper): Phase I clustering and proxies, Phase II VAA distillation into K base
models, Phase III merge (Eqs. 12-13) and tuning with the experts frozen."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.deepfusion.config import KDConf
from edgeai_repro.deepfusion.evaluation.scores import evaluate
from edgeai_repro.deepfusion.models import moe
from edgeai_repro.deepfusion.planning.phases import Forward, Phase, Shape, teacher_forwards
from edgeai_repro.deepfusion.server.clustering import cluster
from edgeai_repro.deepfusion.server.distill import Distiller, KDDataset, kd_loader
from edgeai_repro.deepfusion.server.methods.base import Fused, Method, Server, tune


def fuse_phases(shape: Shape) -> list[Phase]:
    """Phase II (K students: the MoE's dense base, one routed expert) and Phase III (the merged MoE,
    experts frozen; the memory model counts every weight as trained: an upper bound)."""
    c, g = shape.conf, shape.moe_config
    k = g.num_experts
    return [
        Phase(
            "distill",
            f"Phase II: {k} students",
            f"{shape.setup.case.moe} base (1 expert)",
            moe.base_config(g),
            "full",
            c.kd.batch_size,
            k * c.kd.steps,
            runs=k,
        ),
        Phase(
            "tune",
            "Phase III (experts frozen; counted as trained)",
            shape.moe_name,
            g,
            "full",
            c.kd.batch_size,
            c.tune.steps,
        ),
    ]


def distill_domains(s: Server, kd: KDConf, label: str, out: Fused) -> list[nn.Module]:
    """Phase I + II: one base model per knowledge domain, distilled from the domain's proxy."""
    c = s.conf
    doms = cluster(c.cluster, c.comm.embedding_dim, s.seed, s.devices)
    out.metrics.update(purity_domains=doms.purity_domains, purity_embedding=doms.purity_embedding)
    init = s.init_moe()
    bases, per_domain = (
        [],
        {"student_ppl_before": [], "student_ppl_after": [], "fm_first": [], "fm_last": [], "kd_steps": []},
    )
    for i, members in enumerate(doms.members(s.devices)):
        ds = KDDataset(s.corpus.public, s.moe_tok, kd.max_len)
        s.add_targets(ds, members, kd, with_features=True)
        stages = [
            int(f.shape[-1]) for f in ds.items[0]["targets"][-1]["feats"]
        ]  # the teacher's width per stage
        # The student's and VAA's random parts from their own seed: a cell's result must not depend on
        # whether the teacher was built (a targets-cache miss) or read back (a hit).
        torch.manual_seed(derive_seed("distill", i, s.seed) % 2**62)
        student = s.base_model(init, i % s.moe_config.num_experts)
        module = Distiller(student, kd, stages, heldout=s.heldout(), eval_every=max(1, kd.steps // 5))
        micro, accum = s.setup.batching("distill", kd.batch_size)
        chosen = s.fit(
            module,
            kd_loader(ds, micro, derive_seed("kd", i, s.seed) % 2**62),
            kd.steps,
            accum,
            select=student,
        )
        per_domain["kd_steps"].append(float(chosen))
        for step, h in enumerate(module.history):
            out.curves += [
                {"method": label, "curve": f"L_{k} (domain {i})", "step": step, "value": h[k]}
                for k in ("ce", "fm", "kl")
            ]
        out.curves += [
            {"method": label, "curve": f"student held-out log-ppl (domain {i})", "step": st, "value": v}
            for st, v in module.heldout_curve
        ]
        per_domain["student_ppl_before"].append(module.heldout_curve[0][1])
        # after Phase II: the student as it leaves it (its selected weights), not its last step's
        per_domain["student_ppl_after"].append(evaluate(student, s.heldout(), s.device)["log_ppl"])
        fm = [h["fm"] for h in module.history]
        q = max(1, len(fm) // 5)
        per_domain["fm_first"].append(sum(fm[:q]) / q)
        per_domain["fm_last"].append(sum(fm[-q:]) / q)
        bases.append(student)
    out.metrics.update({k: sum(v) / len(v) for k, v in per_domain.items() if v})  # means over the domains
    return bases


def fuse(s: Server, label: str, kd: KDConf) -> Fused:
    """Phases I-III with the feature path of `kd` (VAA for DeepFusion, OFA-KD's branches for OFA-KD)."""
    out = Fused()
    bases = distill_domains(s, kd, label, out)
    merged = moe.merge(bases, s.moe_config, seed=derive_seed("router", s.seed) % 2**62).to(
        s.setup.train_dtype
    )
    # Where knowledge is lost: the merged MoE's held-out log-ppl before and after Phase III, beside
    # the students' before and after Phase II (distill_domains) and the devices' (run_fusion).
    out.metrics["merged_log_ppl_before"] = evaluate(merged, s.heldout(), s.device)["log_ppl"]
    out.model = tune(
        s, merged, s.conf.tune.steps, s.corpus.public, freeze=True, label=label, lr=s.conf.tune.lr, out=out
    )
    out.metrics["merged_log_ppl_after"] = evaluate(out.model, s.heldout(), s.device)["log_ppl"]
    return out


@dataclass
class DeepFusion(Method):
    name: str = "deepfusion"

    def __call__(self, s: Server) -> Fused:
        return fuse(s, "deepfusion", s.kd)

    def phases(self, shape: Shape) -> list[Phase]:
        return fuse_phases(shape)

    def forwards(self, shape: Shape) -> list[Forward]:
        return teacher_forwards(shape, each_device=False)  # one teacher per cluster
