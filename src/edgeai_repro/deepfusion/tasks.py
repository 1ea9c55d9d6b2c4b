"""The DeepFusion tasks a cell can run: communication (Fig. 8), memory (Fig. 7), Phase I, and the
server-side fusion of one method (Tables I-II, Fig. 9, ablations, transfer).

Each task reads its raw config once, into a typed `Setup` (setup.py), and passes that down."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from omegaconf import DictConfig

from edgeai_repro.core.tasks import CellContext
from edgeai_repro.deepfusion.accounting import comm, memory
from edgeai_repro.deepfusion.config import DeepFusionConf, settings
from edgeai_repro.deepfusion.setup import Setup

GB = comm.GB


def series(c: DeepFusionConf, method: str) -> str:
    """A method's row label: qualified by the accounting preset unless it is the default."""
    return (
        f"{method} ({c.accounting.label or c.accounting.name})" if c.accounting.name != "default" else method
    )


def run_comm(cfg: DictConfig, ctx: CellContext) -> dict:
    """Fig. 8: total traffic of DeepFusion and FedJETS for one case, N and model assignment."""
    s = Setup.of(cfg)
    c, cs = s.conf, s.case
    ours = comm.deepfusion_bytes(
        s.types, lambda t: comm.wire_for(c.comm, t), comm.embedding_bytes(c.comm), s.model_config
    )
    theirs = comm.fedjets_traffic(c.comm, c.fedjets, cs.moe, c.devices, s.model_config(cs.moe))
    reduction = 100 * (1 - ours["total_bytes"] / theirs["total_bytes"])
    return {
        "records": [
            {
                "method": series(c, "deepfusion"),
                "comm_gb": ours["total_bytes"] / GB,
                "per_device_gb": ours["per_device_bytes"] / GB,
                "reduction_pct": reduction,
            },
            {
                "method": series(c, "fedjets"),
                "comm_gb": theirs["total_bytes"] / GB,
                "per_device_gb": theirs["per_device_bytes"] / GB,
                "local_moe_params_b": theirs["local_moe_params"] / 1e9,
            },
        ],
        "device_types": {t: s.types.count(t) for t in cs.device_models},
        "inputs": s.inputs(reads_data=False),
    }


def run_memory(cfg: DictConfig, ctx: CellContext) -> dict:
    """Fig. 7: predicted peak training memory of one model; at tiny scale, also measured (QLoRA
    with bf16 weights in place of NF4, so the weights are compared apart from the rest)."""
    s = Setup.of(cfg)
    c, m = s.conf, s.conf.memory
    if m.model.startswith("fedjets_"):
        config = comm.pruned_moe_config(
            s.model_config(m.model.removeprefix("fedjets_")), c.fedjets.local_experts
        )
    else:
        config = s.model_config(m.model)
    est = memory.estimate(config, m)
    record = {
        "method": series(c, "deepfusion" if not m.model.startswith("fedjets_") else "fedjets"),
        "peak_gb": est["total"] / GB,
        "params_b": est["params"] / 1e9,
        "trainable_m": est["trainable"] / 1e6,
        **{f"{k}_gb": est[k] / GB for k in ("weights", "optimizer", "activations", "backward", "overhead")},
        "eager_attention": float(est["attention"] == "eager"),
        "gradient_checkpointing": float(est["gradient_checkpointing"]),
        "kbit_upcast": float(est["kbit_upcast"]),
    }
    if c.models == "tiny":
        # The CPU runs eager attention: the model is compared under the kernel the measurement runs
        # (the fused-kernel emulation is checked where a CPU's own flash kernel runs, in the tests).
        same = est if est["attention"] == "eager" else memory.estimate(config, replace(m, attention="eager"))
        measured = memory.measure_peak(config, m, seed=s.seed)
        record["measured_gb"] = measured["total"] / GB
        drop = m.mode == "qlora"  # measured with bf16 in place of NF4 weights: compare the rest
        record["model_over_measured"] = (same["total"] - same["overhead"] - drop * same["weights"]) / (
            measured["total"] - drop * measured["weights"]
        )
    return {"records": [record], "inputs": s.inputs(reads_data=False)}


def run_phase1(cfg: DictConfig, ctx: CellContext) -> dict:
    """Devices train and upload; the server embeds, clusters and averages (Phase I)."""
    from edgeai_repro.deepfusion.data.encoding import QADataset, loader
    from edgeai_repro.deepfusion.devices.federation import federation
    from edgeai_repro.deepfusion.evaluation.scores import evaluate
    from edgeai_repro.deepfusion.server.clustering import cluster, proxy
    from edgeai_repro.deepfusion.server.methods.base import build

    s = Setup.of(cfg)
    c, corpus = s.conf, s.corpus
    plan_for_gpu(s, build(c.method))
    devices = federation(s, ctx.trainers)
    types = [d.model_type for d in devices]
    for d in devices:
        ctx.trainers.log({"device/samples": len(d.indices), "device/log_ppl": d.meta["test"]["log_ppl"]})

    doms = cluster(c.cluster, c.comm.embedding_dim, s.seed, devices)
    domains = doms.labels
    measured = sum(d.meta["payload_bytes"] for d in devices) + sum(d.meta["embedding_bytes"] for d in devices)
    accounted = comm.deepfusion_bytes(
        types, lambda t: comm.wire_for(c.comm, t), comm.embedding_bytes(c.comm), s.model_config
    )["total_bytes"]

    proxy_metrics = []
    for dom in sorted(set(domains)):
        members = [d for d, x in zip(devices, domains) if x == dom]
        t = members[0].model_type
        model = proxy(s.model_config(t), t, [m.upload() for m in members]).to(s.device)
        test = loader(
            QADataset(corpus.test[: c.device.eval_samples], s.tokenizer(t), c.data.max_len), 32, 0, False
        )
        proxy_metrics.append(
            {
                "domain": dom,
                "model_type": t,
                "members": [m.index for m in members],
                "subdomains": [m.dominant for m in members],
                **evaluate(model, test),
            }
        )
        del model

    # Devices train for different numbers of steps (epochs of their own data): each loss curve is
    # resampled at 5% steps of its own training, then averaged over the devices of a type.
    curves, grid = [], np.linspace(0, 1, 21)
    for t in dict.fromkeys(types):
        curves_t = [
            np.interp(grid, np.linspace(0, 1, len(d.meta["losses"])), d.meta["losses"])
            for d in devices
            if d.model_type == t and d.meta["losses"]
        ]
        curves += [
            {"method": "deepfusion", "curve": f"device loss ({t})", "step": int(100 * g), "value": float(v)}
            for g, v in zip(grid, np.mean(curves_t, axis=0))
        ]
    mean = lambda xs: float(np.mean(xs))
    record = {
        "method": "deepfusion",
        "purity_domains": doms.purity_domains,
        "purity_embedding": doms.purity_embedding,
        "purity_chance": doms.purity_chance,
        "purity_domains_chance": doms.purity_domains_chance,
        "purity_domains_max": doms.purity_domains_max,
        "measured_mb": measured / 1e6,
        "accounted_mb": accounted / 1e6,
        "bytes_equal": float(measured == accounted),
        "device_log_ppl": mean([d.meta["test"]["log_ppl"] for d in devices]),
        "device_token_acc": mean([d.meta["test"]["token_acc"] for d in devices]),
        "proxy_log_ppl": mean([p["log_ppl"] for p in proxy_metrics]),
        "proxy_token_acc": mean([p["token_acc"] for p in proxy_metrics]),
        "domains": len(set(domains)),
    }
    return {
        "records": [record],
        "curves": curves,
        "proxies": proxy_metrics,
        "inputs": s.inputs(reads_data=True),
        "devices": [
            {
                "index": d.index,
                "model_type": d.model_type,
                "samples": len(d.indices),
                "dominant": d.dominant,
                "domain": dom,
                "train_s": d.meta["train_s"],
                **d.meta["test"],
            }
            for d, dom in zip(devices, domains)
        ],
    }


def plan_for_gpu(s: Setup, method) -> None:
    """On a GPU, the cell trains with the run plan's micro-batches (plan.py), as the dry run printed."""
    if s.gpu_memory_gb is not None:
        from edgeai_repro.deepfusion.planning.plan import planner

        s.planner = planner(s, method)


def variant_label(c: DeepFusionConf, name: str) -> str:
    """The row name of a cell: the method, plus what an ablation changed."""
    if name != "deepfusion":
        return name
    parts = [
        name
        for name, on in [
            ("no VAA", c.kd.kd == "direct"),
            ("VAA as written", c.kd.kd == "vaa" and c.kd.vaa_variant == "paper"),
            ("alpha=0", c.kd.alpha == 0),
            ("beta=0", c.kd.beta == 0),
            ("no clustering", c.cluster.mode == "random"),
        ]
        if on
    ]
    return "deepfusion" + (f" ({', '.join(parts)})" if parts else "")


def method_comm_bytes(s: Setup, traffic: str, moe_config) -> float:
    """Bytes a method moves over the network, by part 1's accounting (nan: no federated traffic)."""
    c = s.conf
    if traffic in {"uploads", "models"}:
        emb = comm.embedding_bytes(c.comm) if traffic == "uploads" else 0
        return comm.deepfusion_bytes(s.types, lambda t: comm.wire_for(c.comm, t), emb, s.model_config)[
            "total_bytes"
        ]
    if traffic == "fedjets":
        return comm.fedjets_traffic(c.comm, c.fedjets, s.case.moe, len(s.types), moe_config)["total_bytes"]
    return float("nan")  # logits: the method measures what it sends (its comm_gb); none: no federated traffic


def run_fusion(cfg: DictConfig, ctx: CellContext) -> dict:
    """One method of Tables I-II (or Fig. 9, an ablation, transfer) for one case, N and seed."""
    from hydra.utils import instantiate

    from edgeai_repro.deepfusion.data.encoding import QADataset, loader
    from edgeai_repro.deepfusion.devices.federation import federation
    from edgeai_repro.deepfusion.evaluation import judge
    from edgeai_repro.deepfusion.evaluation.scores import evaluate, option_accuracy
    from edgeai_repro.deepfusion.server.methods.base import Server, build

    s = Setup.of(cfg)
    c, cs = s.conf, s.case
    method = build(c.method)
    plan_for_gpu(s, method)
    devices = federation(s, ctx.trainers) if method.needs_devices else []
    moe_config = s.moe_config
    server = Server(s, devices, ctx.trainers, moe_config, s.tokenizer(cs.moe), method.steps)
    fused = method(server)
    model = fused.model
    test = loader(QADataset(s.corpus.test, server.moe_tok, c.data.max_len), 32, 0, False)
    scores = evaluate(model, test, s.device)  # on the cell's accelerator, where the judge then generates
    record = {
        "method": variant_label(c, method.name),
        "log_ppl": scores["log_ppl"],
        "ppl": math.exp(scores["log_ppl"]),
        "token_acc": scores["token_acc"],
        "comm_gb": method_comm_bytes(s, method.traffic, moe_config) / GB,
        "experts": moe_config.num_experts,
    }
    if devices:  # the devices' own test log-ppl (each in its tokenizer's tokens): knowledge-loss diagnostic
        record["device_log_ppl"] = float(np.mean([d.meta["test"]["log_ppl"] for d in devices]))
    # multiple-choice cases; a reference row may state its own (prior: the base rate), not scored again
    options = (
        None
        if "option_acc" in fused.metrics
        else option_accuracy(model, s.corpus.test, server.moe_tok, c.data.max_len)
    )
    if options is not None:
        record["option_acc"] = options
    if c.judge["samples"]:
        grader = instantiate(c.judge, _convert_="all")
        record["judge_score"] = judge.judge_answers(
            model, server.moe_tok, s.corpus.test[: grader.samples], grader
        )
    record.update(fused.metrics)
    if ctx.run_dir and c.save_model and hasattr(model, "save_pretrained"):
        model.save_pretrained(ctx.run_dir / "moe")
    ctx.trainers.log({f"test/{k}": v for k, v in record.items() if isinstance(v, float)})
    return {
        "records": [record],
        "curves": fused.curves,
        "inputs": s.inputs(reads_data=True),
        # where the global MoE was scored and judged: the trainer's accelerator (Setup.device)
        "scoring_device": str(next(model.parameters()).device),
    }


__all__ = ["run_comm", "run_fusion", "run_memory", "run_phase1", "settings"]
