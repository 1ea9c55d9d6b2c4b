"""The DeepFusion tasks a cell can run."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from edgeai_repro.core.tasks import CellContext, Task, register
from edgeai_repro.deepfusion import catalog, comm, memory
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
