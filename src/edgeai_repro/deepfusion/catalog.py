"""The model architectures DeepFusion uses, and how each is built at every scale.

Paper scale names the real checkpoints. Their published `config.json` values are recorded here as
well, so that parameter counts, communication bytes and memory are computed exactly on a machine
with no network (the model is built on the meta device: shapes only, no weights). Tiny scale builds
the same transformers classes from shrunken configs.

DeepSeek-MoE-16B ships only as remote code (`model_type: deepseek`), which cannot run offline; it is
expressed with transformers' Qwen2-MoE class (dense first layer via `mlp_only_layers`, the two
shared experts as one shared expert of twice the width, no qkv bias). The only architectural
difference is Qwen2-MoE's scalar shared-expert gate: 2048 parameters per MoE layer (README).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from torch import nn

from edgeai_repro.core.errors import ConfigError


@dataclass(frozen=True)
class Arch:
    """One architecture: its transformers config class, the real checkpoint and its config values."""

    name: str
    config_class: str      # transformers config class
    hub_id: str            # the checkpoint at paper scale
    paper: dict[str, Any]  # published config.json values (what the hub would return)
    tokenizer_family: str  # models of one family share a tokenizer (GPT-2 and GPT-2 Medium do)
    moe: bool = False

    def config(self, overrides: dict[str, Any] | None = None) -> transformers.PretrainedConfig:
        cls = getattr(transformers, self.config_class)
        return cls(**{**self.paper, **(overrides or {})})


# Values from each checkpoint's config.json on the Hugging Face hub [external].
ARCHS: dict[str, Arch] = {a.name: a for a in [
    Arch("gpt2", "GPT2Config", "openai-community/gpt2", tokenizer_family="gpt2",
         paper=dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024)),
    Arch("gpt2_medium", "GPT2Config", "openai-community/gpt2-medium", tokenizer_family="gpt2",
         paper=dict(n_embd=1024, n_layer=24, n_head=16, vocab_size=50257, n_positions=1024)),
    Arch("tinyllama", "LlamaConfig", "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", tokenizer_family="llama",
         paper=dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                    num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048,
                    tie_word_embeddings=False)),
    Arch("olmo", "OlmoConfig", "allenai/OLMo-1B-hf", tokenizer_family="olmo",
         paper=dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=16,
                    num_key_value_heads=16, vocab_size=50304, max_position_embeddings=2048,
                    tie_word_embeddings=True)),
    Arch("bloom", "BloomConfig", "bigscience/bloom-1b1", tokenizer_family="bloom",
         paper=dict(hidden_size=1536, n_layer=24, n_head=16, vocab_size=250880)),
    Arch("qwen_moe", "Qwen2MoeConfig", "Qwen/Qwen1.5-MoE-A2.7B", tokenizer_family="qwen", moe=True,
         paper=dict(hidden_size=2048, intermediate_size=5632, moe_intermediate_size=1408,
                    shared_expert_intermediate_size=5632, num_experts=60, num_experts_per_tok=4,
                    num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16, vocab_size=151936,
                    max_position_embeddings=8192, tie_word_embeddings=False, qkv_bias=True)),
    Arch("deepseek_moe", "Qwen2MoeConfig", "deepseek-ai/deepseek-moe-16b-base", tokenizer_family="deepseek",
         moe=True,
         paper=dict(hidden_size=2048, intermediate_size=10944, moe_intermediate_size=1408,
                    shared_expert_intermediate_size=2 * 1408, num_experts=64, num_experts_per_tok=6,
                    mlp_only_layers=[0], num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=16,
                    vocab_size=102400, max_position_embeddings=4096, tie_word_embeddings=False,
                    qkv_bias=False, norm_topk_prob=False)),
]}


def get(name: str, key: str = "model") -> Arch:
    if name not in ARCHS:
        raise ConfigError(f"{key}={name!r} is not a known model type; use one of: {', '.join(ARCHS)}.")
    return ARCHS[name]


def build_config(arch: Arch, overrides: dict[str, Any] | None = None, vocab_size: int | None = None,
                 attn_implementation: str = "eager") -> transformers.PretrainedConfig:
    """The arch's config with tiny-scale overrides; eager attention so saved activations are the real ones."""
    extra = dict(overrides or {})
    if vocab_size is not None:
        extra["vocab_size"] = vocab_size
    cfg = arch.config(extra)
    cfg._attn_implementation = attn_implementation
    if arch.config_class == "GPT2Config":  # dropout off: training is deterministic and memory is comparable
        cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.0
    return cfg


def meta_model(config: transformers.PretrainedConfig, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """The causal LM for `config` on the meta device: exact shapes, no memory, no download."""
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)


def real_model(config: transformers.PretrainedConfig, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A randomly initialised causal LM for `config` (tiny scale). MoE experts use the per-expert
    loop, which runs in any dtype on a CPU (the grouped kernel wants bf16; the meta-device
    accounting keeps it, since the loop's data-dependent routing cannot run on meta)."""
    if getattr(config, "num_experts", None):
        config = copy.deepcopy(config)
        config._experts_implementation = "eager"
    return transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)


def unique_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Named parameters with tied weights counted once (GPT-2's embedding is its output layer)."""
    return list(model.named_parameters(remove_duplicate=True))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for _, p in unique_parameters(model))


def expert_parameter_count(model: nn.Module) -> tuple[int, int, int]:
    """(routed experts' parameters per expert summed over layers, number of experts, all the rest)."""
    cfg = model.config
    n_experts = int(getattr(cfg, "num_experts", 0) or 0)
    if not n_experts:
        return 0, 0, parameter_count(model)
    routed = sum(p.numel() for name, p in unique_parameters(model) if ".mlp.experts." in name)
    return routed // n_experts, n_experts, parameter_count(model) - routed
