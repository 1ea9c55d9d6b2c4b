"""The DeepFusion tasks a cell can run: communication (Fig. 8), memory (Fig. 7), Phase I, and the
server-side fusion of one method (Tables I-II, Fig. 9, ablations)."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from edgeai_repro.core.tasks import CellContext
from edgeai_repro.deepfusion import catalog, checkpoints, comm, memory, on_device, phase1
from edgeai_repro.deepfusion import config as dfc
from edgeai_repro.deepfusion.federation import assign_models

GB = comm.GB


def embedding_bytes(c: DictConfig) -> int:
    return c.comm.embedding_dim * comm.bytes_per_element(c.comm.embedding_format)


def wire(c: DictConfig, fmt: str | None = None) -> comm.Wire:
    """The transfer format `fmt` (default: the upload format) with this config's quantisation settings."""
    m = c.comm
    return comm.Wire(fmt or m.upload_format, m.quantize, m.rest_format, int(m.nf4_block), bool(m.double_quant))


def wire_for(c: DictConfig, model: str) -> comm.Wire:
    """How model type `model` travels: its own format if `comm.formats` names one, else the upload format."""
    return wire(c, c.comm.formats.get(model, c.comm.upload_format))


def device_wire(c: DictConfig):
    """`wire_for` as a function of the model type, for deepfusion_bytes."""
    return lambda t: wire_for(c, t)


def fedjets_traffic(c: DictConfig, n_devices: int, moe_config) -> dict:
    """FedJETS' traffic by this config's protocol and formats (the case's MoE up, `download_format` down)."""
    up = wire_for(c, dfc.case(c).moe)
    down = wire(c, c.comm.download_format) if c.comm.download_format else up
    return comm.fedjets_bytes(n_devices, moe_config, OmegaConf.to_object(c.fedjets), up, down,
                              bool(c.comm.count_download))


def series(c: DictConfig, method: str) -> str:
    """A method's row label: qualified by the accounting preset unless it is the default."""
    return f"{method} ({c.accounting.label or c.accounting.name})" if c.accounting.name != "default" else method


def run_comm(cfg: DictConfig, ctx: CellContext) -> dict:
    """Fig. 8: total traffic of DeepFusion and FedJETS for one case, N and model assignment."""
    c = cfg.deepfusion
    cs = dfc.case(c)
    types = assign_models(c.devices, list(cs.device_models), int(cfg.seed), c.assignment)
    ours = comm.deepfusion_bytes(types, device_wire(c), embedding_bytes(c), lambda t: catalog.model_config(c, t))
    theirs = fedjets_traffic(c, c.devices, catalog.model_config(c, cs.moe))
    reduction = 100 * (1 - ours["total_bytes"] / theirs["total_bytes"])
    return {"records": [
        {"method": series(c, "deepfusion"), "comm_gb": ours["total_bytes"] / GB,
         "per_device_gb": ours["per_device_bytes"] / GB, "reduction_pct": reduction},
        {"method": series(c, "fedjets"), "comm_gb": theirs["total_bytes"] / GB,
         "per_device_gb": theirs["per_device_bytes"] / GB, "local_moe_params_b": theirs["local_moe_params"] / 1e9},
    ], "device_types": {t: types.count(t) for t in cs.device_models}}


def memory_config(c: DictConfig):
    name = c.memory.model
    if name.startswith("fedjets_"):
        moe = name.removeprefix("fedjets_")
        return comm.pruned_moe_config(catalog.model_config(c, moe), c.fedjets.local_experts)
    return catalog.model_config(c, name)


def run_memory(cfg: DictConfig, ctx: CellContext) -> dict:
    """Fig. 7: predicted peak training memory of one model; at tiny scale, also measured (QLoRA
    with bf16 weights in place of NF4, so the weights are compared apart from the rest)."""
    c = cfg.deepfusion
    m = c.memory
    setup = OmegaConf.to_object(m)
    config = memory_config(c)
    est = memory.estimate(config, setup)
    record = {"method": series(c, "deepfusion" if not m.model.startswith("fedjets_") else "fedjets"),
              "peak_gb": est["total"] / GB, "params_b": est["params"] / 1e9, "trainable_m": est["trainable"] / 1e6,
              **{f"{k}_gb": est[k] / GB for k in ("weights", "optimizer", "activations", "backward", "overhead")},
              "eager_attention": float(est["attention"] == "eager"),
              "gradient_checkpointing": float(est["gradient_checkpointing"]), "kbit_upcast": float(est["kbit_upcast"])}
    if c.models == "tiny":
        # The CPU runs eager attention: the model is compared under the kernel the measurement runs
        # (the fused-kernel emulation is checked where a CPU's own flash kernel runs, in the tests).
        same = est if est["attention"] == "eager" else memory.estimate(config, replace(setup, attention="eager"))
        measured = memory.measure_peak(config, setup, seed=int(cfg.seed))
        record["measured_gb"] = measured["total"] / GB
        drop = m.mode == "qlora"   # measured with bf16 in place of NF4 weights: compare the rest
        record["model_over_measured"] = ((same["total"] - same["overhead"] - drop * same["weights"])
                                         / (measured["total"] - drop * measured["weights"]))
    return {"records": [record]}


def run_phase1(cfg: DictConfig, ctx: CellContext) -> dict:
    """Devices train and upload; the server embeds, clusters and averages (Phase I)."""
    from edgeai_repro.deepfusion.device_llm import QADataset, evaluate, loader

    c, seed = cfg.deepfusion, int(cfg.seed)
    cache = Path(cfg.paths.cache) / "deepfusion"
    corpus = on_device.load_corpus(c, seed)
    folders = checkpoints.folders_of(cfg)
    devices = on_device.federation(c, seed, corpus, cache, ctx.trainers, folders)
    types = [d.model_type for d in devices]
    for d in devices:
        ctx.trainers.log({"device/samples": len(d.indices), "device/log_ppl": d.meta["test"]["log_ppl"]})

    doms = phase1.cluster(c, seed, corpus, devices)
    domains = doms.labels
    measured = (sum(d.meta["payload_bytes"] for d in devices)
                + sum(d.meta["embedding_bytes"] for d in devices))
    accounted = comm.deepfusion_bytes(types, device_wire(c), embedding_bytes(c),
                                      lambda t: checkpoints.model_config(c, t, folders))["total_bytes"]

    tokenizers = {t: on_device.tokenizer_for(c, t, corpus, cache, folders) for t in dict.fromkeys(types)}
    proxy_metrics = []
    for dom in sorted(set(domains)):
        members = [d for d, x in zip(devices, domains) if x == dom]
        t = members[0].model_type
        model = phase1.proxy(c, t, [m.upload() for m in members], folders)
        test = loader(QADataset(corpus.test[:c.device.eval_samples], tokenizers[t], c.data.max_len), 32, 0, False)
        proxy_metrics.append({"domain": dom, "model_type": t, "members": [m.index for m in members],
                              "subdomains": [m.dominant for m in members], **evaluate(model, test)})
        del model

    # Devices train for different numbers of steps (epochs of their own data): each loss curve is
    # resampled at 5% steps of its own training, then averaged over the devices of a type.
    curves, grid = [], np.linspace(0, 1, 21)
    for t in dict.fromkeys(types):
        curves_t = [np.interp(grid, np.linspace(0, 1, len(d.meta["losses"])), d.meta["losses"])
                    for d in devices if d.model_type == t and d.meta["losses"]]
        curves += [{"method": "deepfusion", "curve": f"device loss ({t})", "step": int(100 * g), "value": float(v)}
                   for g, v in zip(grid, np.mean(curves_t, axis=0))]
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    record = {
        "method": "deepfusion",
        "purity_domains": doms.purity_domains,
        "purity_embedding": doms.purity_embedding,
        "purity_chance": doms.purity_chance,
        "measured_mb": measured / 1e6, "accounted_mb": accounted / 1e6, "bytes_equal": float(measured == accounted),
        "device_log_ppl": mean([d.meta["test"]["log_ppl"] for d in devices]),
        "device_token_acc": mean([d.meta["test"]["token_acc"] for d in devices]),
        "proxy_log_ppl": mean([p["log_ppl"] for p in proxy_metrics]),
        "proxy_token_acc": mean([p["token_acc"] for p in proxy_metrics]),
        "domains": len(set(domains)),
    }
    return {"records": [record], "curves": curves, "proxies": proxy_metrics,
            "devices": [{"index": d.index, "model_type": d.model_type, "samples": len(d.indices), "dominant": d.dominant,
                         "domain": dom, "train_s": d.meta["train_s"], **d.meta["test"]} for d, dom in zip(devices, domains)]}




def variant_label(c: DictConfig, name: str) -> str:
    """The row name of a cell: the method, plus what an ablation changed."""
    if name != "deepfusion":
        return name
    parts = [name for name, on in [("no VAA", c.kd.kd == "direct"),
                                   ("VAA as written", c.kd.kd == "vaa" and c.kd.vaa_variant == "paper"),
                                   ("alpha=0", c.kd.alpha == 0),
                                   ("beta=0", c.kd.beta == 0), ("no clustering", c.cluster.mode == "random")] if on]
    return "deepfusion" + (f" ({', '.join(parts)})" if parts else "")


def method_comm_bytes(c: DictConfig, traffic: str, types: list[str], moe_config, folders: dict | None = None) -> float:
    """Bytes a method moves over the network, by part 1's accounting (nan: no federated traffic)."""
    if traffic in {"uploads", "models"}:
        emb = embedding_bytes(c) if traffic == "uploads" else 0
        return comm.deepfusion_bytes(types, device_wire(c), emb,
                                     lambda t: checkpoints.model_config(c, t, folders))["total_bytes"]
    if traffic == "fedjets":
        return fedjets_traffic(c, len(types), moe_config)["total_bytes"]
    return float("nan")   # logits: the method measures what it sends (its comm_gb); none: no federated traffic


def run_fusion(cfg: DictConfig, ctx: CellContext) -> dict:
    """One method of Tables I-II (or Fig. 9, or an ablation) for one case, N and seed."""
    from hydra.utils import instantiate

    from edgeai_repro.deepfusion import judge, methods, moe
    from edgeai_repro.deepfusion.device_llm import QADataset, evaluate, loader

    c, seed = cfg.deepfusion, int(cfg.seed)
    cache = Path(cfg.paths.cache) / "deepfusion"
    corpus = on_device.load_corpus(c, seed)
    cs = dfc.case(c)
    types = assign_models(c.devices, list(cs.device_models), seed, c.assignment)
    method = methods.build(c.method)
    folders = checkpoints.folders_of(cfg)
    devices = (on_device.federation(c, seed, corpus, cache, ctx.trainers, folders)
               if method.needs_devices else [])
    k_total = sum(int(c.cluster.k_types.get(t, c.cluster.k_per_type)) for t in dict.fromkeys(types))
    moe_config = moe.with_experts(checkpoints.model_config(c, cs.moe, folders), k_total)
    server = methods.Server(c, seed, corpus, devices, cache, ctx.trainers, moe_config,
                            on_device.tokenizer_for(c, cs.moe, corpus, cache, folders), folders)
    label = variant_label(c, method.name)
    fused = method(server)
    model = fused.model
    test = loader(QADataset(corpus.test, server.moe_tok, c.data.max_len), 32, 0, False)
    scores = evaluate(model, test)
    record = {"method": label, "log_ppl": scores["log_ppl"], "ppl": math.exp(scores["log_ppl"]),
              "token_acc": scores["token_acc"], "comm_gb": method_comm_bytes(c, method.traffic, types, moe_config, folders) / GB,
              "experts": moe_config.num_experts}
    if c.judge.samples:
        grader = instantiate(c.judge, _convert_="all")
        record["judge_score"] = judge.judge_answers(model, server.moe_tok, corpus.test[:grader.samples], grader)
    record.update(fused.metrics)
    if ctx.run_dir and cfg.deepfusion.get("save_model", False):
        model.save_pretrained(ctx.run_dir / "moe")
    ctx.trainers.log({f"test/{k}": v for k, v in record.items() if isinstance(v, float)})
    return {"records": [record], "curves": fused.curves}


