"""The global MoE: its dense "base models", the merge of Phase III (Eqs. 12-13), and which of its
parameters Phase III tunes.

A base model M_i is the target MoE architecture with a single routed expert: a router over one
expert always gives it weight 1, so M_i is a dense LLM whose FFN has exactly an expert's shape
(and, for DeepSeek-MoE, the dense first layer and the shared experts the MoE has). The merge is then
shape-exact: expert i of block l is M_i's expert of block l; everything else (embedding, attention,
norms, shared experts, the dense first layer, the output layer) is the element-wise mean over the
K base models. Routers start fresh and are learnt in Phase III.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import PretrainedConfig

from edgeai_repro.deepfusion.models import catalog

EXPERT_KEYS = (".mlp.experts.",)


def with_experts(config: PretrainedConfig, n_experts: int, top_k: int | None = None) -> PretrainedConfig:
    cfg = copy.deepcopy(config)
    cfg.num_experts = n_experts
    cfg.num_experts_per_tok = min(top_k or config.num_experts_per_tok, n_experts)
    return cfg


def global_config(config: PretrainedConfig, n_experts: int) -> PretrainedConfig:
    """The global MoE with K = `n_experts` routed experts (one per domain), kept sparse: each token
    uses top-k = min(the published top-k, K // 2) of them (at least one). The published top-k
    (Qwen 4 of 60, DeepSeek 6 of 64) over only K experts would route most or all of a token through
    every expert (DeepSeek's top-6 of K = 6 is a dense model, and FedJETS' local MoE of the top-k
    experts would be the whole of it); at most half of them keeps routing a choice and FedJETS'
    local model a true subset. Tiny presets publish top-2, so K = 6 keeps top-2 there."""
    return with_experts(config, n_experts, max(1, min(config.num_experts_per_tok, n_experts // 2)))


def base_config(moe_config: PretrainedConfig) -> PretrainedConfig:
    """M_i: the MoE architecture with one routed expert (a dense model)."""
    return with_experts(moe_config, 1, 1)


def is_expert(name: str) -> bool:
    return any(k in name for k in EXPERT_KEYS)


def is_router(name: str) -> bool:
    return name.endswith(".mlp.gate.weight")


def merge(bases: list[nn.Module], moe_config: PretrainedConfig, seed: int = 0) -> nn.Module:
    """The global MoE with K = len(bases) experts built from the K base models."""
    config = with_experts(moe_config, len(bases))
    torch.manual_seed(seed)
    moe = catalog.real_model(config)
    states = [b.state_dict() for b in bases]
    merged = {}
    for name, value in moe.state_dict().items():
        if is_expert(name):  # (experts, ...) fused tensors: expert i <- base i's only expert
            merged[name] = torch.cat([s[name] for s in states], dim=0).to(value.dtype)
        elif is_router(name):  # K rows, learnt in Phase III
            merged[name] = value
        else:
            merged[name] = torch.stack([s[name].float() for s in states]).mean(0).to(value.dtype)
    moe.load_state_dict(merged)
    return moe


def freeze_experts(moe: nn.Module) -> list[str]:
    """Phase III: every FFN (routed and shared experts, a dense first layer) is frozen; embedding,
    attention, norms, routers and output layer train. Returns the trainable names."""
    trainable = []
    for name, p in moe.named_parameters():
        ffn = ".mlp." in name and not is_router(name) and not name.endswith("shared_expert_gate.weight")
        p.requires_grad_(not ffn)
        if not ffn:
            trainable.append(name)
    return trainable
