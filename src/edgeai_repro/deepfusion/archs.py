"""The model architectures DeepFusion uses: each one's transformers config class, real checkpoint
and published config.json values. Data only (no torch, no transformers), so that validating a
config never loads the model stack; catalog.py builds models from these.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

    def config(self, overrides: dict[str, Any] | None = None):
        import transformers

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
