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
from typing import Any

import torch
import transformers
from torch import nn

from edgeai_repro.deepfusion.models.families import Arch


def build_config(
    arch: Arch,
    overrides: dict[str, Any] | None = None,
    vocab_size: int | None = None,
    attn_implementation: str = "eager",
) -> transformers.PretrainedConfig:
    """The arch's config with tiny-scale overrides; eager attention so saved activations are the real ones."""
    extra = dict(overrides or {})
    if vocab_size is not None:
        extra["vocab_size"] = vocab_size
    if overrides:  # shrunken: the published special-token ids may lie outside the tiny vocabulary (the
        # tokenizer trained for the run names its own; generation is given them explicitly)
        extra = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None, **extra}
    cfg = arch.config(extra)
    cfg._attn_implementation = attn_implementation
    if arch.config_class == "GPT2Config":  # dropout off: training is deterministic and memory is comparable
        cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.0
    return cfg


def kernel_for(config_class: type[transformers.PretrainedConfig], wanted: str) -> str:
    """`wanted` (deepfusion.attention) where the causal LM class of `config_class` supports it, else
    eager (transformers' BLOOM has no SDPA and refuses it). The memory model asks it too."""
    if wanted == "eager":
        return wanted
    cls = transformers.AutoModelForCausalLM._model_mapping[config_class]
    flag = "_supports_flash_attn" if wanted == "flash_attention_2" else "_supports_sdpa"
    return wanted if getattr(cls, flag, False) else "eager"


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


def family_config(arch: Arch, models: str) -> transformers.PretrainedConfig:
    """The transformers config of a family at a scale: `paper` (its published config.json values) or
    `tiny` (the same class shrunk)."""
    return build_config(arch, arch.tiny if models == "tiny" else None)
