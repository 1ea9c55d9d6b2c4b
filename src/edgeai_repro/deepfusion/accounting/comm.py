"""Communication accounting: bytes each method sends and receives.

At paper scale every size is computed from the real model configs (parameter shapes on the meta
device) in the transfer format. At tiny scale the same functions are checked against the bytes of
the tensors a device actually uploads (`payload_bytes`).

Formats: fp32, bf16, fp16 (every tensor at that width), and the two bitsandbytes storage formats,
counted exactly as bitsandbytes stores a weight matrix: int8 (LLM.int8's vector-wise quantisation:
one byte per weight plus one fp32 scale per output row) and nf4 (half a byte per weight plus one
absmax per block of `nf4_block` weights: fp32, or with double quantisation one byte, plus an fp32
scale per 256 blocks and one offset). bitsandbytes quantises only the weight matrices; with
`quantize: linear` embeddings, the output head, norms and biases travel in `rest_format`, with
`quantize: all` every tensor is in the quantised format (an assumption, not what bitsandbytes does).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import torch
from safetensors.torch import save as safetensors_save
from torch import nn
from transformers import PretrainedConfig

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.deepfusion.config import CommConf, FedJetsConf
from edgeai_repro.deepfusion.models import catalog
from edgeai_repro.deepfusion.models.moe import with_experts

GB = 1e9  # the paper's figures are in decimal GB

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
QUANTIZED = ("int8", "nf4")


@dataclass(frozen=True)
class Wire:
    """How a model travels: its format and, for int8/nf4, what is quantised and how."""

    fmt: str = "bf16"
    quantize: str = "linear"  # linear (weight matrices only, as bitsandbytes) | all
    rest_format: str = "bf16"  # the tensors bitsandbytes leaves unquantised
    nf4_block: int = 64
    double_quant: bool = True

    def tensor_bytes(self, shape: tuple[int, ...], quantizable: bool) -> int:
        numel = math.prod(shape)
        if self.fmt not in QUANTIZED or not (quantizable or self.quantize == "all"):
            fmt = self.fmt if self.fmt not in QUANTIZED else self.rest_format
            return numel * bytes_per_element(fmt)
        if self.fmt == "int8":  # one fp32 scale per output row (per row of every expert's matrix)
            rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
            return numel + 4 * rows
        blocks = math.ceil(numel / self.nf4_block)
        scales = blocks + 4 * math.ceil(blocks / 256) + 4 if self.double_quant else 4 * blocks
        return math.ceil(numel / 2) + scales


def dtype_of(fmt: str, key: str = "deepfusion.comm.upload_format") -> torch.dtype:
    if fmt not in DTYPES:
        raise ConfigError(f"{key}={fmt!r} is unknown; use one of: {', '.join(DTYPES)}.")
    return DTYPES[fmt]


def bytes_per_element(fmt: str) -> int:
    return torch.empty(0, dtype=dtype_of(fmt)).element_size()


def model_bytes(model: nn.Module, wire: str | Wire) -> int:
    """Accounted size of a model's transfer in `wire` (a format name or a Wire): its unique
    parameters, each in its format. Weight matrices (2-D or more, not the token embeddings or the
    output head) are what bitsandbytes quantises."""
    wire = Wire(wire) if isinstance(wire, str) else wire
    if wire.fmt not in QUANTIZED:
        return catalog.parameter_count(model) * bytes_per_element(wire.fmt)
    skip = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        skip.add(id(head.weight))
    return sum(
        wire.tensor_bytes(tuple(p.shape), p.dim() >= 2 and id(p) not in skip)
        for _, p in catalog.unique_parameters(model)
    )


def upload_tensors(model: nn.Module, fmt: str) -> dict[str, torch.Tensor]:
    """What a device sends: its unique parameters, cast to the upload format."""
    dtype = dtype_of(fmt)
    return {name: p.detach().to(dtype).contiguous() for name, p in catalog.unique_parameters(model)}


def payload_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Measured tensor bytes of a safetensors serialisation (the blob minus its JSON header)."""
    blob = safetensors_save(tensors)
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len])
    payload = len(blob) - 8 - header_len
    offsets = sum(
        end - start for k, v in header.items() if k != "__metadata__" for start, end in [v["data_offsets"]]
    )
    assert offsets == payload, "safetensors layout changed"
    return payload


def pruned_moe_config(full: PretrainedConfig, local_experts: int | None) -> PretrainedConfig:
    """The global MoE's config with only `local_experts` routed experts per layer."""
    keep = full.num_experts_per_tok if local_experts is None else int(local_experts)
    if not 1 <= keep <= full.num_experts:
        raise ConfigError(
            f"deepfusion.fedjets.local_experts={local_experts} must be between 1 and the "
            f"global MoE's {full.num_experts} experts."
        )
    return with_experts(full, keep)


def fedjets_bytes(
    n_devices: int,
    moe_config: PretrainedConfig,
    protocol: FedJetsConf,
    upload: str | Wire,
    download: str | Wire | None = None,
    count_download: bool = True,
) -> dict:
    """Each round every participating device downloads the pruned local MoE (counted unless
    `count_download` is off) and uploads it back."""
    local = catalog.meta_model(pruned_moe_config(moe_config, protocol.local_experts))
    per_round = model_bytes(local, upload) + (model_bytes(local, download or upload) if count_download else 0)
    active = max(1, round(protocol.participation * n_devices))
    total = protocol.rounds * active * per_round
    return {
        "total_bytes": total,
        "local_moe_params": catalog.parameter_count(local),
        "per_device_bytes": total / n_devices,
    }


def deepfusion_bytes(
    device_types: list[str],
    fmt: str | Wire | Callable[[str], str | Wire],
    embedding_bytes: int,
    config_of: Callable[[str], PretrainedConfig],
) -> dict:
    """One upload per device (its trained model and its data embedding); nothing is downloaded.
    `fmt` may be a function of the model type (per-family formats)."""
    wire_of = fmt if callable(fmt) else (lambda t: fmt)
    sizes = {t: model_bytes(catalog.meta_model(config_of(t)), wire_of(t)) for t in sorted(set(device_types))}
    models = sum(sizes[t] for t in device_types)
    total = models + embedding_bytes * len(device_types)
    return {
        "total_bytes": total,
        "model_bytes": models,
        "per_type_bytes": sizes,
        "per_device_bytes": total / len(device_types),
    }


# ---------------------------------------------------------------- a cell's accounting settings (CommConf)


def embedding_bytes(conf: CommConf) -> int:
    return conf.embedding_dim * bytes_per_element(conf.embedding_format)


def wire(conf: CommConf, fmt: str | None = None) -> Wire:
    """The transfer format `fmt` (default: the upload format) with these quantisation settings."""
    return Wire(
        str(fmt or conf.upload_format),
        str(conf.quantize),
        str(conf.rest_format),
        int(conf.nf4_block),
        bool(conf.double_quant),
    )


def wire_for(conf: CommConf, model: str) -> Wire:
    """How model type `model` travels: its own format if `formats` names one, else the upload format."""
    return wire(conf, conf.formats.get(model, conf.upload_format))


def fedjets_traffic(conf: CommConf, protocol: FedJetsConf, moe: str, n_devices: int, moe_config) -> dict:
    """FedJETS' traffic by its protocol and these formats (the case's MoE up, `download_format` down)."""
    up = wire_for(conf, moe)
    down = wire(conf, conf.download_format) if conf.download_format else up
    return fedjets_bytes(n_devices, moe_config, protocol, up, down, bool(conf.count_download))
