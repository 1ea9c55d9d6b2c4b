"""Peak on-device training memory: an analytic model, and a measurement to validate it.

The model adds four terms: weights (by storage format), gradients and AdamW states of the trainable
parameters, the activations autograd saves for the backward pass, and the transient fp32 logits of
the loss. Saved activations are counted exactly by running the forward pass on the meta device
under a saved-tensor hook (shapes and dtypes, no memory), so the count follows the real
transformers code for any sequence length and batch. The measurement side runs one real training
step on a tiny model under torch's MemTracker and reads its peak.
"""
from __future__ import annotations

import torch
from torch import nn

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.deepfusion import catalog
from edgeai_repro.deepfusion.comm import dtype_of
from edgeai_repro.deepfusion.config import MODES, MemoryConf

ADAMW_STATE_BYTES = 8       # two fp32 moments per trainable parameter
LORA_PARAM_BYTES = 4        # peft keeps adapters in fp32
# NF4 with double quantisation (QLoRA): 4 bits + an 8-bit absmax per 64 weights + an fp32 constant
# per 256 absmax values = 4.127 bits per weight.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)


def lora_wrap(model: nn.Module, r: int) -> nn.Module:
    """Adapters on every linear layer of the blocks (peft's "all-linear"), base weights frozen."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", lora_dropout=0.0))


def _linear_weights(model: nn.Module) -> int:
    """Parameters of the block linear layers, the ones QLoRA stores in NF4 (not embeddings, norms, head)."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, (nn.Linear, Conv1D)) and m is not head)


def saved_activation_bytes(model: nn.Module, batch: int, seq_len: int, attention: str = "eager",
                           bf16_as: torch.dtype = torch.bfloat16) -> int:
    """Bytes autograd keeps for backward in one forward pass with labels, deduplicated by storage.

    The model runs eager attention; with attention="flash" each saved (batch, heads, seq, seq)
    probability matrix is replaced by what a fused kernel keeps instead: one fp32 log-sum-exp per
    query and head. `bf16_as` counts bf16 tensors at another dtype's size: MoE layers run on the
    meta device only in bf16 (their grouped kernel), so an fp32 MoE is counted from a bf16 pass.
    """
    scale = torch.empty(0, dtype=bf16_as).element_size() / 2
    if attention not in {"eager", "flash"}:
        raise ConfigError(f"deepfusion.memory.attention={attention!r} is unknown; use eager or flash.")
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        size = storage.nbytes() if t.device.type != "meta" else t.numel() * t.element_size()
        if t.dtype == torch.bfloat16:
            size = int(size * scale)
        if attention == "flash" and t.dim() >= 3 and tuple(t.shape[-2:]) == (seq_len, seq_len):
            size = t.numel() // seq_len * 4  # views of one matrix share a storage: same size each time
        saved[storage._cdata] = size
        return t

    device = next(model.parameters()).device
    ids = torch.zeros(batch, seq_len, dtype=torch.long, device=device)
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(b for k, b in saved.items() if k not in params)


def estimate(config, setup: MemoryConf) -> dict[str, float]:
    """Predicted peak training memory in bytes, by component, for a transformers config."""
    if setup.mode not in MODES:
        raise ConfigError(f"training mode {setup.mode!r} is unknown; use one of: {', '.join(MODES)}.")
    if setup.gradient_checkpointing:
        raise ConfigError("deepfusion.memory.gradient_checkpointing=true is not modelled yet; set it to false.")
    dtype = dtype_of(setup.dtype, "deepfusion.memory.dtype")
    elem = torch.empty(0, dtype=dtype).element_size()
    moe = bool(getattr(config, "num_experts", None))
    model = catalog.meta_model(config, dtype=torch.bfloat16 if moe else dtype)
    params = catalog.parameter_count(model)
    if setup.mode == "full":
        trainable, weights = params, params * elem
        grads, optim = params * elem, params * ADAMW_STATE_BYTES
    else:
        linear = _linear_weights(model)
        weights = (linear * NF4_BYTES + (params - linear) * elem) if setup.mode == "qlora" else params * elem
        model = lora_wrap(model, setup.lora_r)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        weights += trainable * LORA_PARAM_BYTES
        grads, optim = trainable * LORA_PARAM_BYTES, trainable * ADAMW_STATE_BYTES
    activations = saved_activation_bytes(model, setup.batch, setup.seq_len, setup.attention, bf16_as=dtype)
    # The loss upcasts the logits to fp32; their gradient of the same size exists at the backward's start.
    transient = 2 * setup.batch * setup.seq_len * config.vocab_size * 4
    total = weights + grads + optim + activations + transient
    return {"weights": weights, "gradients": grads, "optimizer": optim, "activations": activations,
            "transient": transient, "total": total, "params": params, "trainable": trainable}


class _PeakTracker:
    """Live bytes of every tensor storage the wrapped code allocates, and their peak.

    A dispatch mode sees each op's outputs; a weak reference per new storage subtracts its bytes
    when the storage is freed. (torch's MemTracker does the same per module, but refuses models
    with frozen parameters, which LoRA has.)
    """

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.weak import WeakIdKeyDictionary

        tracker = self
        self.live = 0
        self.peak = 0
        self._seen = WeakIdKeyDictionary()
        self._refs: list = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in torch.utils._pytree.tree_leaves(out):
                    if isinstance(t, torch.Tensor):
                        tracker._add(t.untyped_storage())
                return out

        self.mode = Mode()

    def _add(self, storage: torch.UntypedStorage) -> None:
        import weakref

        if storage in self._seen:
            return
        size = storage.nbytes()
        self._seen[storage] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        self._refs.append(weakref.ref(storage, lambda _ref, size=size: self._free(size)))

    def _free(self, size: int) -> None:
        self.live -= size


def _state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int]:
    weights = {p.untyped_storage()._cdata: p.untyped_storage().nbytes() for p in model.parameters()}
    states = {t.untyped_storage()._cdata: t.untyped_storage().nbytes()
              for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.dim() > 0}
    return sum(weights.values()), sum(states.values())


def measure_peak(model: nn.Module, setup: MemoryConf, vocab_size: int, seed: int = 0) -> dict[str, float]:
    """Measured peak bytes of one AdamW training step, after a warm-up step has created the
    optimizer states: weights and optimizer states (resident) plus the peak of everything the
    step allocates (activations, gradients, temporaries), seen storage by storage."""
    if setup.mode == "qlora":
        raise ConfigError("QLoRA needs bitsandbytes on a GPU; measure at tiny scale with mode full or lora.")
    if setup.mode == "lora":
        model = lora_wrap(model, setup.lora_r)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (setup.batch, setup.seq_len), generator=g)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    weights, optim = _state_bytes(model, opt)
    tracker = _PeakTracker()
    with tracker.mode:
        step()
    return {"weights": weights, "optimizer": optim, "step_peak": tracker.peak,
            "total": weights + optim + tracker.peak}
