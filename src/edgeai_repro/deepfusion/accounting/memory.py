"""Peak on-device training memory: a model that simulates the training step on the meta device,
and a measurement on a real (tiny) model to validate it.

The model adds: weights (by storage format: NF4 counted exactly, as bitsandbytes stores it), AdamW
states of the trainable parameters, the peak of everything one training step allocates, and a
fixed framework overhead. The step's peak is found by running the step -- forward, loss and
backward, built exactly as the training code builds it -- on the meta device (shapes and dtypes,
no memory) under a dispatch-mode tracker that adds each new tensor storage's bytes and subtracts
them when the storage dies. So activations, the loss's logits, recomputation under gradient
checkpointing and the gradients are whatever the real transformers code allocates, at any size,
with no formula of ours in between; the same tracker over a real step on a tiny model gives the
same peak (tests). What the meta device cannot run is emulated and said so: a fused attention
kernel (attention=flash: each (.., seq, seq) tensor counts as the fp32 log-sum-exp per query the
kernel keeps instead), NF4 (the 4-bit layers compute in bf16 from a dequantised copy, one layer's
weight at a time: counted once), and an fp32 MoE (its grouped kernel runs on meta in bf16 only:
counted at fp32 size).

Options (MemoryConf) say which code path is modelled:
  loss       - full: the logits of every position, upcast to fp32 by the loss (transformers'
               `labels=` path, which device_llm runs); answer_only: the head reads only the answer
               positions; chunked: the head and the loss run `loss_chunk` positions at a time and
               are recomputed in the backward pass (a fused/chunked cross-entropy);
  attention  - auto: what transformers runs for the family on a GPU: a fused SDPA kernel where the
               class supports SDPA, eager where it does not (BLOOM); or flash / eager;
  gradient_checkpointing / kbit_upcast - None: as the mode's code path does it; QLoRA's
               `prepare_model_for_kbit_training` turns checkpointing on (re-entrant) and casts every
               parameter bitsandbytes leaves unquantised (embeddings, norms, head) to fp32, after
               which the residual stream runs in fp32 (4-bit layers cast their input to the compute
               dtype and their output back);
  overhead_gb - a fixed term (CUDA context, allocator slack): 0 by default, fitted in a preset.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.optim import adamw
from edgeai_repro.core.optim import state_bytes as optim_state_bytes
from edgeai_repro.deepfusion.accounting.comm import GB, dtype_of
from edgeai_repro.deepfusion.config import LossPath, MemoryConf, Mode
from edgeai_repro.deepfusion.data.encoding import IGNORE
from edgeai_repro.deepfusion.models import catalog
from edgeai_repro.deepfusion.models.moe import is_expert

ADAMW_STATE_BYTES = 8  # Fig. 7's setting: two fp32 moments per trainable parameter (mixed precision)
LORA_PARAM_BYTES = 4  # peft keeps adapters in fp32


def state_bytes(setup: MemoryConf, dtype: torch.dtype) -> int:
    """Optimizer bytes per trained parameter stored in `dtype`: Fig. 7's AdamW with fp32 moments, or
    (optimizer=training, the run plan) what our trainings' AdamW keeps (core/optim.py: moments in
    the weights' dtype, plus the Kahan compensation below fp32)."""
    return optim_state_bytes(dtype) if setup.optimizer == "training" else ADAMW_STATE_BYTES


# NF4 with double quantisation (QLoRA): 4 bits + an 8-bit absmax per 64 weights + an fp32 constant
# per 256 absmax values = 4.127 bits per weight.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)


def lora_wrap(model: nn.Module, r: int) -> nn.Module:
    """Adapters on every linear layer of the blocks (peft's "all-linear"), base weights frozen."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", lora_dropout=0.0)
    )


def _block_linears(model: nn.Module) -> list[nn.Module]:
    """The block linear layers, the ones bitsandbytes stores in NF4 (not embeddings, norms, head)."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return [m for m in model.modules() if isinstance(m, (nn.Linear, Conv1D)) and m is not head]


def _linear_weights(model: nn.Module) -> int:
    """Weights QLoRA stores in NF4: the block linear layers and an MoE's experts (fused
    (experts, out, in) tensors in transformers; per-expert linear layers when QLoRA was written)."""

    experts = sum(p.numel() for name, p in model.named_parameters() if is_expert(name))
    return sum(m.weight.numel() for m in _block_linears(model)) + experts


def kbit_code_path(model: nn.Module, compute: torch.dtype) -> nn.Module:
    """QLoRA's numerics without bitsandbytes: every parameter it leaves unquantised in fp32 (as
    prepare_model_for_kbit_training casts them) and each block linear layer computing in `compute`
    and returning its input's dtype (as bnb's Linear4bit does). Weights stay in `compute` here: the
    NF4 storage is counted analytically."""
    linears = _block_linears(model)
    quantised = {id(m.weight) for m in linears}
    for p in model.parameters():
        if id(p) not in quantised:
            p.data = p.data.float()
    for m in linears:
        m.weight.data = m.weight.data.to(compute)
        if getattr(m, "bias", None) is not None:
            m.bias.data = m.bias.data.to(compute)
        m.register_forward_pre_hook(
            lambda mod, args: (
                mod.__dict__.__setitem__("_in", args[0].dtype),
                (args[0].to(compute), *args[1:]),
            )[1]
        )
        m.register_forward_hook(lambda mod, args, out: out.to(mod.__dict__.pop("_in")))
    return model


def training_loss(
    model: nn.Module,
    ids: torch.Tensor,
    labels: torch.Tensor,
    path: str = "full",
    chunk: int = 1024,
    answer_len: int = 64,
) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions, by one of three code paths
    (module doc); all three give the same value, they differ in what they keep in memory.
    answer_only reads the answer as the last `answer_len` positions of each row (answer_labels), a
    fixed slice, so the same code runs on the meta device."""
    mask = torch.ones_like(ids)
    if path == "full":
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    head = base.get_output_embeddings()
    if path == "answer_only":
        h, y = hidden[:, -answer_len:], target[:, -answer_len:]
        return nn.functional.cross_entropy(head(h).float().transpose(1, 2), y, ignore_index=IGNORE)
    if path != "chunked":
        raise ConfigError(
            f"deepfusion.memory.loss={path!r} is unknown; use one of: {', '.join(LossPath.values())}."
        )
    from torch.utils.checkpoint import checkpoint

    def part(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(head(h).float(), y, ignore_index=IGNORE, reduction="sum")

    h, y = hidden.reshape(-1, hidden.shape[-1]), target.reshape(-1)
    total = sum(
        checkpoint(part, h[i : i + chunk], y[i : i + chunk], use_reentrant=False)
        for i in range(0, len(y), chunk)
    )
    return total / (y != IGNORE).sum().clamp_min(1)


def answer_labels(ids: torch.Tensor, answer_len: int) -> torch.Tensor:
    """Labels with the last `answer_len` positions of each row scored (the answer) and the prompt not."""
    labels = ids.clone()
    labels[:, : max(0, ids.shape[1] - answer_len)] = IGNORE
    return labels


def step_peak(
    model: nn.Module,
    batch: int,
    seq_len: int,
    attention: str = "eager",
    bf16_as: torch.dtype = torch.bfloat16,
    loss: str = "full",
    chunk: int = 1024,
    answer_len: int = 64,
    optimizer: str = "adamw",
) -> dict[str, int]:
    """Peak bytes one AdamW training step (forward, loss, backward, optimizer step) allocates after
    its optimizer states exist (a step after the first), and the bytes still live when the forward pass ends (saved activations and the
    loss), on the model's device: the meta device for the model."""
    scale = torch.empty(0, dtype=bf16_as).element_size() / 2

    def size(t: torch.Tensor) -> int:
        n = t.untyped_storage().nbytes() if t.device.type != "meta" else t.numel() * t.element_size()
        if t.dtype == torch.bfloat16:
            n = int(n * scale)
        if attention == "flash" and t.dim() >= 3 and tuple(t.shape[-2:]) == (seq_len, seq_len):
            n = t.numel() // seq_len * 4
        return n

    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 2, (batch, seq_len), generator=g).to(device)
    labels = answer_labels(ids, answer_len) if loss == "answer_only" else ids
    trained = [p for p in model.parameters() if p.requires_grad]
    # Fig. 7's setting: torch's AdamW; our trainings' (the run plan): core/optim.adamw
    opt = adamw(trained, lr=1e-4) if optimizer == "training" else torch.optim.AdamW(trained, lr=1e-4)

    def step(tracker: _PeakTracker | None = None) -> int:
        value = training_loss(model, ids, labels, loss, chunk, answer_len)
        forward = tracker.live if tracker else 0
        value.backward()
        opt.step()  # its temporaries count (full fine-tuning: the size of the parameters)
        opt.zero_grad(set_to_none=True)
        return forward

    # The optimizer's states exist before the measured step (they are resident, counted apart): made
    # here as AdamW's first step makes them, instead of running a warm-up step (half the cost).
    for p in (p for group in opt.param_groups for p in group["params"]):
        opt.state[p] = {
            "step": torch.tensor(0.0),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
    weights, optim = _state_bytes(model, opt)
    tracker = _PeakTracker(size)
    with tracker.mode, _autocast_off_on_meta(device):
        forward = step(tracker)
    return {"peak": tracker.peak, "forward": forward, "weights": weights, "optimizer": optim}


@contextlib.contextmanager
def _autocast_off_on_meta(device: torch.device):
    """Let code that switches autocast *off* run on the meta device, which has no autocast state.

    peft >= 0.22 folds a LoRA on MoE expert tensors into the weight inside
    `torch.autocast(device_type=W.device.type, enabled=False)` (`_LoraFactorsProxy`); on meta,
    torch raises "unsupported scalarType" before the context is entered. A disabled autocast
    changes nothing on any device, so on meta it is replaced by an empty context for the duration of
    the simulated step; an enabled one still reaches torch (and fails there, as it would)."""
    if device.type != "meta":
        yield
        return
    real = torch.autocast

    def autocast(device_type: str, *args, **kwargs):
        enabled = kwargs.get("enabled", args[1] if len(args) > 1 else True)
        if device_type == "meta" and not enabled:
            return contextlib.nullcontext()
        return real(device_type, *args, **kwargs)

    torch.autocast = autocast
    try:
        yield
    finally:
        torch.autocast = real


def attention_kernel(config, attention: str) -> str:
    """auto: the fused kernel where the family's transformers class has SDPA, else eager."""
    if attention != "auto":
        return attention
    return "flash" if catalog.kernel_for(type(config), "sdpa") == "sdpa" else "eager"


def code_path(setup: MemoryConf) -> tuple[bool, bool]:
    """(gradient checkpointing, k-bit upcasts) as the mode's code path does them unless set."""
    qlora = setup.mode == "qlora"
    ckpt = qlora if setup.gradient_checkpointing is None else bool(setup.gradient_checkpointing)
    upcast = qlora if setup.kbit_upcast is None else bool(setup.kbit_upcast) and qlora
    return ckpt, upcast


def _prepared(config, setup: MemoryConf, dtype: torch.dtype, meta: bool) -> nn.Module:
    """The model as the training step sees it: built, k-bit prepared, in training mode, LoRA-wrapped,
    checkpointed."""
    moe = bool(getattr(config, "num_experts", None))
    ckpt, upcast = code_path(setup)
    if meta:
        model = catalog.meta_model(config, dtype=torch.bfloat16 if moe else dtype)
    else:
        model = catalog.real_model(config, dtype)
    if upcast and not moe:  # an MoE's grouped kernel runs only in bf16 on meta: its activations stay bf16
        kbit_code_path(model, dtype)
    model.train()
    if setup.mode != "full":
        for p in model.parameters():
            p.requires_grad_(False)
        model = lora_wrap(model, setup.lora_r)
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        model.enable_input_require_grads()  # what peft does for a re-entrant checkpoint over frozen embeddings
    return model


def estimate(config, setup: MemoryConf) -> dict[str, float]:
    """Predicted peak training memory in bytes for a transformers config: resident weights (by
    format) and optimizer states, plus the peak of one training step run on the meta device
    (`activations`: live when the forward pass ends; `backward`: the rest of the peak)."""
    if setup.mode not in Mode.values():
        raise ConfigError(f"training mode {setup.mode!r} is unknown; use one of: {', '.join(Mode.values())}.")
    dtype = dtype_of(setup.dtype, "deepfusion.memory.dtype")
    elem = torch.empty(0, dtype=dtype).element_size()
    ckpt, upcast = code_path(setup)
    base = catalog.meta_model(config, dtype=torch.bfloat16)
    params = catalog.parameter_count(base)
    linear = _linear_weights(base)
    biggest = max((m.weight.numel() for m in _block_linears(base)), default=0)
    if setup.mode == "full":
        trainable, weights = params, params * elem
        optim = params * state_bytes(setup, dtype)
    else:
        rest = (params - linear) * (4 if upcast else elem)
        weights = (linear * NF4_BYTES if setup.mode == "qlora" else linear * elem) + rest
        trainable = sum(p.numel() for p in lora_wrap(base, setup.lora_r).parameters() if p.requires_grad)
        weights += trainable * LORA_PARAM_BYTES
        optim = trainable * state_bytes(setup, torch.float32)  # adapters are fp32
    attention = attention_kernel(config, setup.attention)
    step = step_peak(
        _prepared(config, setup, dtype, meta=True),
        setup.batch,
        setup.seq_len,
        attention,
        bf16_as=dtype,
        loss=setup.loss,
        chunk=setup.loss_chunk,
        answer_len=setup.answer_len,
        optimizer=setup.optimizer,
    )
    # NF4 layers compute from a bf16 copy of their weight, made per call and dropped after it.
    dequant = biggest * 2 if setup.mode == "qlora" else 0
    overhead = setup.overhead_gb * GB
    total = weights + optim + step["peak"] + dequant + overhead
    return {
        "weights": weights,
        "optimizer": optim,
        "activations": step["forward"],
        "backward": step["peak"] - step["forward"] + dequant,
        "overhead": overhead,
        "total": total,
        "params": params,
        "trainable": trainable,
        "attention": attention,
        "gradient_checkpointing": ckpt,
        "kbit_upcast": upcast,
    }


class _PeakTracker:
    """Live bytes of every tensor storage the wrapped code allocates, and their peak.

    A dispatch mode sees each op's outputs; a weak reference per new storage subtracts its bytes
    when the storage is freed. (torch's MemTracker does the same per module, but refuses models
    with frozen parameters, which LoRA has.)
    """

    def __init__(self, size=None) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.weak import WeakIdKeyDictionary

        tracker = self
        self.live = 0
        self.peak = 0
        self._size = size
        self._seen = WeakIdKeyDictionary()
        self._refs: list = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in torch.utils._pytree.tree_leaves(out):
                    if isinstance(t, torch.Tensor):
                        tracker._add(t)
                return out

        self.mode = Mode()

    def _add(self, t: torch.Tensor) -> None:
        import weakref

        storage = t.untyped_storage()
        if storage in self._seen:
            return
        size = self._size(t) if self._size else storage.nbytes()
        self._seen[storage] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        self._refs.append(weakref.ref(storage, lambda _ref, size=size: self._free(size)))

    def _free(self, size: int) -> None:
        self.live -= size


def _state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int]:
    weights = {p.untyped_storage()._cdata: p.untyped_storage().nbytes() for p in model.parameters()}
    states = {
        t.untyped_storage()._cdata: t.untyped_storage().nbytes()
        for s in opt.state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor) and t.dim() > 0
    }
    return sum(weights.values()), sum(states.values())


def measure_peak(config, setup: MemoryConf, seed: int = 0) -> dict[str, float]:
    """Measured peak bytes of one AdamW training step on a real (tiny) model built as the step
    sees it (_prepared: QLoRA's code path with bf16 in place of NF4 weights, since bitsandbytes
    needs a GPU): weights and optimizer states (resident) plus the peak of everything the step
    allocates, seen storage by storage -- the same tracker as the model's, over real tensors."""
    torch.manual_seed(seed)
    model = _prepared(config, setup, dtype_of(setup.dtype, "deepfusion.memory.dtype"), meta=False)
    step = step_peak(
        model,
        setup.batch,
        setup.seq_len,
        "eager",
        loss=setup.loss,
        chunk=setup.loss_chunk,
        answer_len=setup.answer_len,
        optimizer=setup.optimizer,
    )
    return {
        "weights": step["weights"],
        "optimizer": step["optimizer"],
        "step_peak": step["peak"],
        "total": step["weights"] + step["optimizer"] + step["peak"],
    }
