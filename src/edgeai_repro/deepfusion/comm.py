"""Communication accounting: bytes each method sends and receives.

At paper scale every size is computed from the real model configs (parameter counts on the meta
device) times the bytes per element of the transfer format. At tiny scale the same functions are
checked against the bytes of the tensors a device actually uploads (`payload_bytes`).
"""
from __future__ import annotations

import json
import struct
from typing import Callable

import torch
from safetensors.torch import save as safetensors_save
from torch import nn
from transformers import PretrainedConfig

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.deepfusion import catalog
from edgeai_repro.deepfusion.config import FedJetsConf
from edgeai_repro.deepfusion.moe import with_experts

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def dtype_of(fmt: str, key: str = "deepfusion.comm.upload_format") -> torch.dtype:
    if fmt not in DTYPES:
        raise ConfigError(f"{key}={fmt!r} is unknown; use one of: {', '.join(DTYPES)}.")
    return DTYPES[fmt]


def bytes_per_element(fmt: str) -> int:
    return torch.empty(0, dtype=dtype_of(fmt)).element_size()


def model_bytes(model: nn.Module, fmt: str) -> int:
    """Accounted size of a model's upload: unique parameters times bytes per element."""
    return catalog.parameter_count(model) * bytes_per_element(fmt)


def upload_tensors(model: nn.Module, fmt: str) -> dict[str, torch.Tensor]:
    """What a device sends: its unique parameters, cast to the upload format."""
    dtype = dtype_of(fmt)
    return {name: p.detach().to(dtype).contiguous() for name, p in catalog.unique_parameters(model)}


def payload_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Measured tensor bytes of a safetensors serialisation (the blob minus its JSON header)."""
    blob = safetensors_save(tensors)
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len])
    payload = len(blob) - 8 - header_len
    offsets = sum(end - start for k, v in header.items() if k != "__metadata__" for start, end in [v["data_offsets"]])
    assert offsets == payload, "safetensors layout changed"
    return payload


def pruned_moe_config(full: PretrainedConfig, local_experts: int | None) -> PretrainedConfig:
    """The global MoE's config with only `local_experts` routed experts per layer."""
    keep = full.num_experts_per_tok if local_experts is None else int(local_experts)
    if not 1 <= keep <= full.num_experts:
        raise ConfigError(f"deepfusion.fedjets.local_experts={local_experts} must be between 1 and the "
                          f"global MoE's {full.num_experts} experts.")
    return with_experts(full, keep)


def fedjets_bytes(n_devices: int, moe_config: PretrainedConfig, protocol: FedJetsConf, fmt: str) -> dict:
    local = catalog.meta_model(pruned_moe_config(moe_config, protocol.local_experts))
    per_transfer = model_bytes(local, fmt)
    active = max(1, round(protocol.participation * n_devices))
    total = protocol.rounds * active * 2 * per_transfer
    return {"total_bytes": total, "local_moe_params": catalog.parameter_count(local),
            "per_device_bytes": total / n_devices}


def deepfusion_bytes(device_types: list[str], fmt: str, embedding_bytes: int,
                     config_of: Callable[[str], PretrainedConfig]) -> dict:
    """One upload per device (its trained model and its data embedding); nothing is downloaded."""
    sizes = {t: model_bytes(catalog.meta_model(config_of(t)), fmt) for t in sorted(set(device_types))}
    models = sum(sizes[t] for t in device_types)
    total = models + embedding_bytes * len(device_types)
    return {"total_bytes": total, "model_bytes": models, "per_type_bytes": sizes,
            "per_device_bytes": total / len(device_types)}
