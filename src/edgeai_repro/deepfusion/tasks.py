"""The DeepFusion tasks a cell can run: communication (Fig. 8), memory (Fig. 7), Phase I."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.tasks import CellContext, Task, register
from edgeai_repro.deepfusion import catalog, clustering, comm, data, memory, pipeline
from edgeai_repro.deepfusion import config as dfc
from edgeai_repro.deepfusion.federation import assign_models

GB = 1e9


def embedding_bytes(c: DictConfig) -> int:
    return c.comm.embedding_dim * comm.bytes_per_element(c.comm.embedding_format)


def run_comm(cfg: DictConfig, ctx: CellContext) -> dict:
    """Fig. 8: total traffic of DeepFusion and FedJETS for one case, N and model assignment."""
    c = cfg.deepfusion
    cs = dfc.case(c)
    types = assign_models(c.devices, list(cs.device_models), int(cfg.seed), c.assignment)
    fmt = c.comm.upload_format
    ours = comm.deepfusion_bytes(types, fmt, embedding_bytes(c), lambda t: dfc.model_config(c, t))
    protocol = comm.FedJetsProtocol(**OmegaConf.to_container(c.fedjets))
    moe_config = dfc.model_config(c, cs.moe)
    theirs = comm.fedjets_bytes(c.devices, moe_config, protocol, fmt)
    reduction = 100 * (1 - ours["total_bytes"] / theirs["total_bytes"])
    return {"records": [
        {"method": "deepfusion", "comm_gb": ours["total_bytes"] / GB, "per_device_gb": ours["per_device_bytes"] / GB,
         "reduction_pct": reduction},
        {"method": "fedjets", "comm_gb": theirs["total_bytes"] / GB, "per_device_gb": theirs["per_device_bytes"] / GB,
         "local_moe_params_b": theirs["local_moe_params"] / 1e9},
    ], "device_types": {t: types.count(t) for t in cs.device_models}}


def memory_config(c: DictConfig):
    name = c.memory.model
    if name.startswith("fedjets_"):
        moe = name.removeprefix("fedjets_")
        return comm.pruned_moe_config(dfc.model_config(c, moe), c.fedjets.local_experts)
    return dfc.model_config(c, name)


def run_memory(cfg: DictConfig, ctx: CellContext) -> dict:
    """Fig. 7: predicted peak training memory of one model; at tiny scale, also measured."""
    c = cfg.deepfusion
    m = c.memory
    setup = memory.TrainSetup(mode=m.mode, batch=m.batch, seq_len=m.seq_len, dtype=m.dtype, lora_r=m.lora_r,
                              attention=m.attention)
    config = memory_config(c)
    est = memory.estimate(config, setup)
    record = {"method": "deepfusion" if not m.model.startswith("fedjets_") else "fedjets",
              "peak_gb": est["total"] / GB, "params_b": est["params"] / 1e9, "trainable_m": est["trainable"] / 1e6,
              **{f"{k}_gb": est[k] / GB for k in ("weights", "gradients", "optimizer", "activations", "transient")}}
    if c.models == "tiny" and m.mode != "qlora":
        model = catalog.real_model(config, setup.torch_dtype())
        measured = memory.measure_peak(model, setup, config.vocab_size, seed=int(cfg.seed))
        record["measured_gb"] = measured["total"] / GB
        record["model_over_measured"] = est["total"] / measured["total"]
    return {"records": [record]}


register(Task(name="deepfusion_comm", paper="deepfusion", section="deepfusion", run=run_comm,
              validate=dfc.validate_common))
register(Task(name="deepfusion_memory", paper="deepfusion", section="deepfusion", run=run_memory,
              validate=dfc.validate_memory))


def _proxy(c: DictConfig, model_type: str, uploads: list[dict]) -> torch.nn.Module:
    """A proxy model built from the uploads of one domain (what the server holds, in upload precision)."""
    model = catalog.real_model(dfc.model_config(c, model_type))
    missing, unexpected = model.load_state_dict(clustering.average_state_dicts(uploads), strict=False)
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in catalog.unique_parameters(model)}
    if unexpected or set(missing) - tied - {n for n, _ in model.named_buffers()}:
        raise RuntimeError(f"proxy weights do not fit {model_type}: missing {missing}, unexpected {unexpected}")
    return model


def run_phase1(cfg: DictConfig, ctx: CellContext) -> dict:
    """Devices train and upload; the server embeds, clusters and averages (Phase I)."""
    from edgeai_repro.deepfusion.device_llm import QADataset, evaluate, loader

    c, seed = cfg.deepfusion, int(cfg.seed)
    if c.models == "paper":
        raise ConfigError("deepfusion/phase1 at scale=paper downloads five checkpoints and trains them on GPUs; "
                          "it is wired (pipeline.base_model) but not runnable offline: use scale=tiny.")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cache = Path(cfg.paths.cache) / "deepfusion"
    corpus = pipeline.load_corpus(c, seed)
    devices = pipeline.federation(c, seed, corpus, cache, ctx.accelerator)
    types = [d.model_type for d in devices]
    for lg in ctx.loggers:
        for d in devices:
            lg.log_metrics({"device/samples": len(d.indices), "device/log_ppl": d.meta["test"]["log_ppl"]}, step=d.index)

    embedder = clustering.Embedder(c.embedder.name, c.embedder.batch_size)
    emb_dtype = comm.dtype_of(c.comm.embedding_format, "deepfusion.comm.embedding_format")
    embeddings = [embedder.device_embedding([data.text_of(corpus.train[i]) for i in d.indices]).to(emb_dtype)
                  for d in devices]
    if embeddings[0].numel() != c.comm.embedding_dim:
        raise ConfigError(f"deepfusion.comm.embedding_dim={c.comm.embedding_dim} but the embedder gives "
                          f"{embeddings[0].numel()} dimensions; set it to {embeddings[0].numel()}.")
    measured = sum(d.meta["payload_bytes"] for d in devices) + sum(comm.payload_bytes({"e": e}) for e in embeddings)
    accounted = comm.deepfusion_bytes(types, c.comm.upload_format, embedding_bytes(c),
                                      lambda t: dfc.model_config(c, t))["total_bytes"]

    sim = clustering.similarity(torch.stack(embeddings))
    k_of = {t: int(c.cluster.k_types.get(t, c.cluster.k_per_type)) for t in types}
    domains = clustering.domains_per_type(sim, types, k_of, seed, c.cluster.n_init)
    truth = [d.dominant for d in devices]
    n_true = len(set(truth))
    free = clustering.kmeans(sim, n_true, seed, c.cluster.n_init) if n_true > 1 else [0] * len(devices)
    rng = np.random.default_rng(seed)
    chance = float(np.mean([clustering.purity(list(rng.permutation(free)), truth) for _ in range(200)]))

    tokenizers = {t: pipeline.tokenizer_for(c, t, corpus, cache) for t in dict.fromkeys(types)}
    proxy_metrics = []
    for dom in sorted(set(domains)):
        members = [d for d, x in zip(devices, domains) if x == dom]
        t = members[0].model_type
        model = _proxy(c, t, [m.upload() for m in members])
        test = loader(QADataset(corpus.test, tokenizers[t], c.data.max_len), 32, 0, False)
        proxy_metrics.append({"domain": dom, "model_type": t, "members": [m.index for m in members],
                              "subdomains": [m.dominant for m in members], **evaluate(model, test)})
        del model

    curves = []
    for t in dict.fromkeys(types):
        losses = np.array([d.meta["losses"] for d in devices if d.model_type == t])
        curves += [{"method": "deepfusion", "curve": f"device loss ({t})", "step": s, "value": float(v)}
                   for s, v in enumerate(losses.mean(0))]
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    record = {
        "method": "deepfusion",
        "purity_domains": clustering.purity(domains, truth),
        "purity_embedding": clustering.purity(list(free), truth),
        "purity_chance": chance,
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


register(Task(name="deepfusion_phase1", paper="deepfusion", section="deepfusion", run=run_phase1,
              validate=dfc.validate_pipeline))
