"""On-device LLM training: one LightningModule for any transformers causal LM.

Full fine-tuning, LoRA or QLoRA (peft; QLoRA needs bitsandbytes) is chosen per model type.
Loss and metrics cover the answer tokens only: prompt positions carry the label -100
(data/encoding.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.optim import adamw


@dataclass(frozen=True)
class FinetuneConf:
    mode: str = "full"  # full | lora | qlora
    lr: float = 3e-3
    steps: int = 60
    lora_r: int = 8
    lora_alpha: int = 16


def with_adapters(model: nn.Module, conf: FinetuneConf) -> nn.Module:
    """Wrap for LoRA/QLoRA (peft, all linear layers of the blocks); full fine-tuning leaves it as is."""
    if conf.mode == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if conf.mode == "qlora":
        model = prepare_model_for_kbit_training(model)
    elif conf.mode != "lora":
        raise ConfigError(f"device training mode {conf.mode!r} is unknown; use full, lora or qlora.")
    return get_peft_model(
        model,
        LoraConfig(
            r=conf.lora_r,
            lora_alpha=conf.lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )


def is_4bit(module: nn.Module) -> bool:
    """A bitsandbytes 4-bit layer (its weight carries the NF4 quantisation state)."""
    return hasattr(getattr(module, "weight", None), "quant_state")


@functools.lru_cache(maxsize=1)
def import_bitsandbytes():
    """bitsandbytes, imported without the hub-kernel lines it logs on a CPU with no network.

    On a CPU with AVX512-BF16, importing bitsandbytes (>= 0.49) asks the hub (through `kernels`) for
    an optional faster 4-bit matmul, and logs two warnings when it cannot have it (offline, or no
    network): "Skipping publisher trust check ..." and "Failed to load CPU gemm_4bit_forward ...".
    Nothing is wrong: bitsandbytes then runs its own CPU kernel, with the same results. Those two
    loggers are held at ERROR during the import and one line of ours says what it means."""
    import logging

    loggers = [logging.getLogger(name) for name in ("bitsandbytes", "kernels")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        import bitsandbytes
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    if not torch.cuda.is_available():
        logging.getLogger(__name__).info(
            "bitsandbytes %s on the CPU: its own 4-bit kernels (an optional hub kernel is not fetched at run time)",
            bitsandbytes.__version__,
        )
    return bitsandbytes


@functools.lru_cache(maxsize=1)
def qlora_problem() -> str | None:
    """Why QLoRA cannot run here, in a few words (None: it can): bitsandbytes must be installed and
    able to quantise on this machine (on a GPU, or on a CPU since bitsandbytes 0.45's CPU backend)."""
    try:
        import_bitsandbytes()
        import bitsandbytes.functional as bnbf

        device = "cuda" if torch.cuda.is_available() else "cpu"
        packed, state = bnbf.quantize_4bit(
            torch.ones(64, 64, device=device, dtype=torch.bfloat16), quant_type="nf4"
        )
        if bnbf.dequantize_4bit(packed, state).float().sub(1).abs().max() >= 0.1:
            return f"its NF4 round trip on the {device} is wrong"
        return None
    except Exception as exc:  # any failure to import or quantise is the answer, said to the user
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}"


def qlora_runs() -> bool:
    """Whether QLoRA can run here (`qlora_problem` says why not)."""
    return qlora_problem() is None


def nf4_config():
    """QLoRA's base-weight quantisation: NF4 with double quantisation, bf16 compute (bitsandbytes)."""
    import transformers

    import_bitsandbytes()  # transformers imports it to quantise: quietly, first
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _bf16_merged(lora) -> nn.Module:
    """One LoRA layer over a 4-bit base as a plain bf16 layer: the base dequantised (the NF4
    weights the device trained against) plus the adapter's update, summed in fp32. A GPT-2
    Conv1D (which transformers quantises transposed) comes back as a Conv1D."""
    import bitsandbytes.functional as bnbf
    from transformers.pytorch_utils import Conv1D

    base = lora.get_base_layer()
    weight = bnbf.dequantize_4bit(base.weight.data, base.weight.quant_state).float()
    for name in lora.active_adapters:
        weight = weight + lora.get_delta_weight(name).float().to(weight.device)
    bias = base.bias.detach() if base.bias is not None else None
    out_f, in_f = weight.shape
    if issubclass(getattr(base, "source_cls", nn.Linear), Conv1D):
        layer = Conv1D(out_f, in_f)
        weight = weight.T
    else:
        layer = nn.Linear(in_f, out_f, bias=bias is not None)
    layer = layer.to(device=weight.device, dtype=torch.bfloat16)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def merged(model: nn.Module) -> nn.Module:
    """The plain transformers model a device uploads: adapters merged into the weights.

    QLoRA: each 4-bit base layer is dequantised into a bf16 copy and the adapter merged into
    that (`_bf16_merged`); peft's own merge would re-quantise the sum to NF4, dropping most of the
    adapter's small update, and leave packed uint8 tensors no other architecture can load. The
    upload is then the bf16 model, counted as such by comm (upload_format bf16)."""
    if not hasattr(model, "merge_and_unload"):
        return model
    from peft.tuners.lora import LoraLayer

    quantized = False
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer) and is_4bit(module.get_base_layer()):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, _bf16_merged(module))
            quantized = True
    plain = model.merge_and_unload()
    if quantized:  # the rest (norms, embeddings: fp32 after prepare_model_for_kbit_training) to bf16 as well,
        # tensor by tensor (transformers refuses .to() on a model it loaded in 4 bits), and no longer marked quantised
        for tensor in [*plain.parameters(), *plain.buffers()]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(torch.bfloat16)
        for attr in ("hf_quantizer", "is_loaded_in_4bit", "quantization_method"):
            plain.__dict__.pop(attr, None)
        plain.is_quantized = False
        plain.config.__dict__.pop("quantization_config", None)
    return plain


class DeviceLLM(L.LightningModule):
    """Fine-tunes one on-device LLM on its private data; logs the answer-token loss per step."""

    def __init__(self, model: nn.Module, conf: FinetuneConf) -> None:
        super().__init__()
        self.model = with_adapters(model, conf)
        self.conf = conf

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log(
            "device/train_loss", loss, prog_bar=False, on_step=True, batch_size=batch["input_ids"].shape[0]
        )
        return loss

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = adamw(params, lr=self.conf.lr)  # Kahan-compensated for bf16 weights (core/optim.py)
        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(self.conf.steps)),
                "interval": "step",
            },
        }


def warmup_cosine(steps: int) -> Callable[[int], float]:
    """The devices' learning-rate factor at optimizer step t of `steps`: linear warm-up over the
    first tenth, then cosine down to 10%."""
    warmup = max(1, steps // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return schedule
