"""Pretrained checkpoints in the layout their publishers ship, mapped onto the classes we run.

DeepSeek-MoE (deepseek-ai/deepseek-moe-16b-base) ships as remote code (`DeepseekForCausalLM`),
which cannot run offline and which transformers has no class for. We run it as transformers'
Qwen2-MoE, whose block computes the same function once the weights are mapped:
  - embeddings, attention (no bias), norms, the dense first layer(s) and the head keep their names;
  - routed experts `mlp.experts.<j>.{gate,up,down}_proj` become the fused tensors
    `mlp.experts.gate_up_proj` (experts, 2 x inter, hidden; gate rows first) and
    `mlp.experts.down_proj` (experts, hidden, inter);
  - the router `mlp.gate.weight` is the same softmax-then-top-k router (DeepSeek does not
    renormalise the top-k weights: norm_topk_prob = false);
  - the shared experts `mlp.shared_experts.*` (one MLP n_shared x moe_inter wide) become
    `mlp.shared_expert.*`. Qwen2-MoE scales the shared output by sigmoid(shared_expert_gate(x));
    DeepSeek adds it unscaled. With the gate's weight at zero the scale is exactly 1/2, so the
    shared down-projection is stored doubled: the sum is DeepSeek's, to rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.deepfusion.models import catalog, families, moe

_EXPERT = "model.layers.{i}.mlp.experts.{j}.{p}.weight"


def deepseek_moe_config(raw: dict):
    """A Qwen2-MoE config computing DeepSeek-MoE's function, from DeepSeek's config.json."""
    try:
        every = int(raw.get("moe_layer_freq", 1))
        dense = [
            i
            for i in range(raw["num_hidden_layers"])
            if i < raw.get("first_k_dense_replace", 0) or i % every != 0
        ]
        values = {
            "hidden_size": raw["hidden_size"],
            "intermediate_size": raw["intermediate_size"],
            "moe_intermediate_size": raw["moe_intermediate_size"],
            "shared_expert_intermediate_size": raw["moe_intermediate_size"] * raw.get("n_shared_experts", 0),
            "num_experts": raw["n_routed_experts"],
            "num_experts_per_tok": raw["num_experts_per_tok"],
            "num_hidden_layers": raw["num_hidden_layers"],
            "num_attention_heads": raw["num_attention_heads"],
            "num_key_value_heads": raw.get("num_key_value_heads", raw["num_attention_heads"]),
            "vocab_size": raw["vocab_size"],
            "max_position_embeddings": raw["max_position_embeddings"],
            "rms_norm_eps": raw.get("rms_norm_eps", 1e-6),
            "rope_theta": raw.get("rope_theta", 10000.0),
            "mlp_only_layers": dense,
            "norm_topk_prob": bool(raw.get("norm_topk_prob", False)),
            "tie_word_embeddings": bool(raw.get("tie_word_embeddings", False)),
            "qkv_bias": False,
        }
    except KeyError as exc:
        raise ConfigError(
            f"the DeepSeek-MoE config.json lacks {exc.args[0]!r}; point the checkpoint at a "
            "deepseek-moe folder (config.json + safetensors)."
        ) from None
    if raw.get("scoring_func", "softmax") != "softmax":
        raise ConfigError(
            f"DeepSeek-MoE scoring_func={raw['scoring_func']!r} is not softmax; only DeepSeek-MoE "
            "v1 checkpoints (softmax routing) map onto Qwen2-MoE."
        )
    config = families.packaged("deepseek_moe").config(values)
    config._attn_implementation = "sdpa"
    return config


def deepseek_to_qwen2moe(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """DeepSeek-MoE tensor names and layout -> Qwen2-MoE's (module doc)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for i in range(config.num_hidden_layers):
        if i in config.mlp_only_layers:
            continue
        prefix = f"model.layers.{i}.mlp."
        gate = [state[_EXPERT.format(i=i, j=j, p="gate_proj")] for j in range(config.num_experts)]
        up = [state[_EXPERT.format(i=i, j=j, p="up_proj")] for j in range(config.num_experts)]
        down = [state[_EXPERT.format(i=i, j=j, p="down_proj")] for j in range(config.num_experts)]
        out[prefix + "experts.gate_up_proj"] = torch.stack([torch.cat([g, u], 0) for g, u in zip(gate, up)])
        out[prefix + "experts.down_proj"] = torch.stack(down)
        used |= {
            _EXPERT.format(i=i, j=j, p=p)
            for j in range(config.num_experts)
            for p in ("gate_proj", "up_proj", "down_proj")
        }
        for p in ("gate_proj", "up_proj", "down_proj"):
            src = state[prefix + f"shared_experts.{p}.weight"]
            out[prefix + f"shared_expert.{p}.weight"] = src * 2 if p == "down_proj" else src
            used.add(prefix + f"shared_experts.{p}.weight")
        out[prefix + "shared_expert_gate.weight"] = torch.zeros(1, config.hidden_size, dtype=gate[0].dtype)
    for name, value in state.items():
        if name not in used:
            out.setdefault(name, value)
    return out


def load_deepseek_moe(folder: str | Path, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """A DeepSeek-MoE checkpoint folder (its config.json and safetensors shards, as the hub ships
    them) as a Qwen2MoeForCausalLM with the same function."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = deepseek_moe_config(_raw_config(folder))
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    if not state:
        raise ConfigError(
            f"{folder} holds no .safetensors weights; download the checkpoint's safetensors shards."
        )
    # Built on the meta device so that no random initialisation of 16B parameters is paid for.
    model = catalog.meta_model(config, dtype=dtype)
    mapped = {k: v.to(dtype) for k, v in deepseek_to_qwen2moe(state, config).items()}
    missing, unexpected = model.load_state_dict(mapped, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ConfigError(
            f"{folder} does not match the DeepSeek-MoE layout (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); it must be a deepseek-moe checkpoint."
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    return _materialised(model, config, f"{folder} must be a complete deepseek-moe checkpoint")


def _materialised(model: nn.Module, config, what: str) -> nn.Module:
    """A model built on the meta device and loaded with `assign=True`, made whole: the buffers
    computed at construction (the rotary frequencies) rebuilt for real, nothing left on meta."""
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ConfigError(f"{left[0]} was not loaded; {what}.")
    return model


def config_of(folder: str | Path):
    """The transformers config of a local checkpoint folder (DeepSeek-MoE's mapped onto Qwen2-MoE)."""
    import transformers

    raw = _raw_config(folder)
    return (
        deepseek_moe_config(raw)
        if raw.get("model_type") == "deepseek"
        else transformers.AutoConfig.from_pretrained(folder)
    )


def _raw_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"{folder} has no config.json; point paths.checkpoints.<model> at the downloaded checkpoint."
        )
    return json.loads(path.read_text())


def model_config(arch: families.Arch, models: str, folder: str | None = None):
    """The config of family `arch` for a cell at scale `models`: at paper scale with a local checkpoint
    folder (`paths.checkpoints.<name>`) the checkpoint's own, else catalog.family_config (the
    published config.json values, or the tiny one)."""
    return config_of(folder) if models == "paper" and folder else catalog.family_config(arch, models)


def parameters_of(arch: families.Arch, models: str, folder: str | None = None) -> int:
    """Parameter count of family `arch` as a cell would load it (built on the meta device)."""
    return catalog.parameter_count(catalog.meta_model(model_config(arch, models, folder)))


def hub_cached(hub_id: str) -> bool:
    """Whether the HF cache already holds `hub_id`'s config (an offline run can load it)."""
    import huggingface_hub

    return isinstance(huggingface_hub.try_to_load_from_cache(hub_id, "config.json"), str)


# The largest model a cell trains on a CPU: the paper code path runs there on small checkpoints of
# the real classes (its test); a published 1B model, let alone a 16B MoE, would take days.
CPU_PARAMETERS = 300_000_000


def check_paper_sources(
    c, built: dict[str, families.Arch], folders: dict[str, str], accelerator: str, experiment: str | None
) -> None:
    """At scale=paper, stop at validation, in one sentence, unless every model of the case can be
    loaded (a local folder in paths.checkpoints, or the hub: online, or in the HF cache) and
    trained (a GPU, or checkpoints small enough for a CPU). `c`: the typed DeepFusion settings,
    `built`: its families by name."""
    import os

    case = c.cases[c.case]
    names = list(dict.fromkeys([*case.device_models, case.moe]))
    for n in names:
        if n in folders and not (Path(folders[n]) / "config.json").is_file():
            raise ConfigError(
                f"paths.checkpoints.{n}={folders[n]!r} holds no config.json; point it at the downloaded "
                "checkpoint folder, or remove it to load from the hub."
            )
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    unreachable = [n for n in names if n not in folders and offline and not hub_cached(built[n].hub_id)]
    big = (
        []
        if accelerator == "gpu"
        else [
            (n, p) for n in names if (p := parameters_of(built[n], c.models, folders.get(n))) > CPU_PARAMETERS
        ]
    )
    needs = []
    if unreachable:
        needs.append(
            f"the checkpoints of {', '.join(unreachable)} (HF_HUB_OFFLINE is set and the HF cache lacks them: "
            "set paths.checkpoints.<model>=<folder> or allow the hub)"
        )
    if big:
        needs.append(
            f"a GPU for {', '.join(f'{n} ({p / 1e9:.1f}B parameters)' for n, p in big)} (trainer=gpu on "
            "GPU nodes)"
        )
    if needs:
        raise ConfigError(
            f"{experiment or 'this experiment'} at scale=paper needs "
            f"{' and '.join(needs)}; on a CPU, use scale=tiny."
        )


def pretrained(
    arch: families.Arch,
    folder: str | None = None,
    dtype: torch.dtype = torch.bfloat16,
    attention: str | None = None,
    **kwargs,
) -> nn.Module:
    """The published checkpoint of `arch`, from a local folder when one is given (a pre-filled
    cache, an offline mirror: `paths.checkpoints.<model>`), else from its hub id. A checkpoint in
    DeepSeek-MoE's layout (config.json model_type "deepseek") is mapped onto Qwen2-MoE. `attention`
    (deepfusion.attention) sets the attention kernel; None leaves transformers' choice."""
    import huggingface_hub
    import transformers

    source = folder or arch.hub_id
    local = Path(source).is_dir()
    if folder and not local:
        raise ConfigError(
            f"paths.checkpoints.{arch.name}={folder!r} is not a folder; point it at the downloaded "
            "checkpoint (config.json + weights) or remove it to use the hub."
        )
    config_file = (
        Path(source) / "config.json"
        if local
        else Path(huggingface_hub.hf_hub_download(source, "config.json"))
    )
    raw = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if raw.get("model_type") == "deepseek":
        if not local:  # pragma: no cover - needs the hub
            source = huggingface_hub.snapshot_download(source, allow_patterns=["*.json", "*.safetensors"])
        model = load_deepseek_moe(source, dtype)
        if attention is not None:
            model.set_attn_implementation(catalog.kernel_for(type(model.config), attention))
        return model
    if attention is not None:  # the config class from the config.json read above, not a second load
        config_class = transformers.CONFIG_MAPPING[raw["model_type"]]
        kwargs["attn_implementation"] = catalog.kernel_for(config_class, attention)
    return transformers.AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)


@torch.no_grad()
def expert_usage(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[int, torch.Tensor]:
    """Per MoE layer, the routing probability mass each expert receives over the real tokens of
    `batches` (public data)."""
    usage: dict[int, torch.Tensor] = {}
    device = next(model.parameters()).device
    moe_layers = [i for i in range(model.config.num_hidden_layers) if i not in model.config.mlp_only_layers]
    for batch in batches:
        mask = batch["attention_mask"].to(device).reshape(-1).bool()
        out = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            output_router_logits=True,
        )
        for layer, logits in zip(moe_layers, out.router_logits):
            mass = torch.softmax(logits.float(), -1)[mask].sum(0).cpu()
            usage[layer] = usage.get(layer, 0) + mass
    return usage


def keep_experts(model: nn.Module, config, usage: dict[int, torch.Tensor]) -> nn.Module:
    """A copy of a pretrained MoE keeping, in every MoE layer, the `config.num_experts` experts the
    public data routes to most (most used first) with their router rows: the K-expert global MoE
    DeepFusion merges into, started from the pretrained one. Expert i of each layer is then what
    the dense student M_i starts from (server.methods.base.Server.base_model)."""
    k = config.num_experts
    chosen = {layer: mass.argsort(descending=True)[:k] for layer, mass in usage.items()}
    out = catalog.meta_model(config, dtype=next(model.parameters()).dtype)
    state = {}
    for name, value in model.state_dict().items():
        layer = int(name.split(".")[2]) if name.startswith("model.layers.") else None
        if layer in chosen and (moe.is_expert(name) or moe.is_router(name)):
            value = value[chosen[layer]]
        state[name] = value
    out.load_state_dict(state, assign=True)
    return _materialised(
        out, config, "the pretrained MoE must have every weight of the global MoE's architecture"
    )
