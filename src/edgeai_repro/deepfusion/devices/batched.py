"""The devices of one model type trained together, as one grouped model.

At tiny scale a device's model is small enough that one training step is mostly per-operation
overhead (Python, dispatch, Lightning), not arithmetic, so sixteen devices trained one after another
pay it sixteen times. Here every parameter of the type's model is stacked along a leading device
axis (`group`): a linear layer becomes one batched matrix product over the devices (`baddbmm`), an
embedding one lookup in the devices' stacked tables, a norm one broadcast of the devices' own scales,
and everything without parameters (attention, rotary or ALiBi positions, activations) runs unchanged
on the devices' batches laid end to end. Each device's loss is the mean over its own answer tokens,
and the loss summed over devices gives each device exactly its own gradient; `GroupedAdamW` is
AdamW elementwise with each device's own learning-rate schedule. A device has its own data, batches
(the same seeded loader as alone) and step count: devices are sorted by steps, so the devices still
training form a prefix of the stack and a step reads views, never copies.

The result equals training each device alone up to floating-point summation order (tested). Only
what can be equal is grouped: full fine-tuning in fp32 of a tiny model with no dropout (a dropout
mask drawn over the group is not the mask a device alone draws), one optimizer step per batch
(`batchable`); anything else trains one device at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset

from edgeai_repro.core.trainer import Trainers
from edgeai_repro.deepfusion.data.encoding import IGNORE
from edgeai_repro.deepfusion.devices.training import warmup_cosine


@dataclass
class _Step:
    """Shared by every grouped layer of a model: the devices in the current step (a prefix of the
    stack) and the rows of their batch laid end to end (k devices x rows each)."""

    k: int
    rows: int = 0


class _Grouped(nn.Module):
    def __init__(self, step: _Step) -> None:
        super().__init__()
        self.step = step

    def per_device(self, x: torch.Tensor) -> torch.Tensor:
        """(k x rows, ..., d) -> (k, rows x ..., d): each device's activations as one matrix."""
        return x.reshape(self.step.k, -1, x.shape[-1])


class GroupedLinear(_Grouped):
    """nn.Linear (weight out x in) or transformers' Conv1D (weight in x out, `transposed`) per device."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None, step: _Step, conv1d: bool) -> None:
        super().__init__(step)
        self.weight, self.bias, self.conv1d = weight, bias, conv1d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.step.k
        w = self.weight[:k] if self.conv1d else self.weight[:k].transpose(1, 2)
        h = self.per_device(x)
        y = torch.bmm(h, w) if self.bias is None else torch.baddbmm(self.bias[:k].unsqueeze(1), h, w)
        return y.reshape(*x.shape[:-1], y.shape[-1])


class GroupedEmbedding(_Grouped):
    """nn.Embedding per device: one lookup in the devices' tables laid end to end. A shared index
    tensor (position ids of one row, broadcast by the model) is expanded to every row first. The
    padding row gets no gradient, as nn.Embedding's padding_idx does."""

    def __init__(self, weight: nn.Parameter, padding_idx: int | None, step: _Step) -> None:
        super().__init__(step)
        self.weight, self.padding_idx = weight, padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        k, (vocab, dim) = self.step.k, self.weight.shape[1:]
        if ids.shape[0] != self.step.rows:
            ids = ids.expand(self.step.rows, *ids.shape[1:])
        offset = (torch.arange(k, device=ids.device) * vocab).reshape(k, *[1] * ids.dim())
        flat = (ids.reshape(k, -1, *ids.shape[1:]) + offset).reshape(ids.shape)
        out = F.embedding(flat, self.weight[:k].reshape(k * vocab, dim))
        if self.padding_idx is not None:
            out = torch.where((ids == self.padding_idx).unsqueeze(-1), out.detach(), out)
        return out


class GroupedLayerNorm(_Grouped):
    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None, eps: float, step: _Step) -> None:
        super().__init__(step)
        self.weight, self.bias, self.eps = weight, bias, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.step.k
        normed = self.per_device(F.layer_norm(x, x.shape[-1:], None, None, self.eps))
        y = normed * self.weight[:k].unsqueeze(1)
        if self.bias is not None:
            y = y + self.bias[:k].unsqueeze(1)
        return y.reshape(x.shape)


class GroupedRMSNorm(_Grouped):
    """transformers' RMSNorm (Llama, OLMo-2, Qwen): normalised in fp32, scaled in the input dtype."""

    def __init__(self, weight: nn.Parameter, eps: float, step: _Step) -> None:
        super().__init__(step)
        self.weight, self.eps = weight, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return (self.weight[: self.step.k].unsqueeze(1) * self.per_device(h)).reshape(x.shape)


def batchable(model: nn.Module) -> str | None:
    """Why `model` cannot be trained grouped (None: it can): a dropout (its masks would differ from
    a device's own) or a layer with parameters this module does not group."""
    from transformers.pytorch_utils import Conv1D

    drops = {
        k: v for k, v in model.config.to_dict().items() if "drop" in k and isinstance(v, float) and v > 0
    }
    if drops or any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        return f"dropout ({drops or 'a Dropout layer'})"
    for m in model.modules():
        if list(m.parameters(recurse=False)) and not (
            isinstance(m, (nn.Linear, Conv1D, nn.Embedding, nn.LayerNorm)) or _is_rms(m)
        ):
            return f"a {type(m).__name__} layer"
    return None


def _is_rms(m: nn.Module) -> bool:
    return type(m).__name__.endswith("RMSNorm") and [n for n, _ in m.named_parameters(recurse=False)] == [
        "weight"
    ]


def group(model: nn.Module, n: int) -> tuple[nn.Module, _Step, dict[str, nn.Parameter]]:
    """`model` with every parameter stacked `n` times (device i's copy at index i, all starting from
    the model's weights), in place; the shared step state; and each original parameter name's
    stacked tensor (tied weights stay tied: one stacked tensor)."""
    from transformers.pytorch_utils import Conv1D

    step, stacked = _Step(n), {}
    names = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)

    def of(p: nn.Parameter | None) -> nn.Parameter | None:
        if p is None:
            return None
        if id(p) not in stacked:
            stacked[id(p)] = nn.Parameter(p.detach().unsqueeze(0).repeat(n, *[1] * p.dim()).contiguous())
        return stacked[id(p)]

    originals = dict(model.named_parameters(remove_duplicate=False))
    for name, m in list(model.named_modules()):
        if not list(m.parameters(recurse=False)):
            continue
        if isinstance(m, (nn.Linear, Conv1D)):
            new = GroupedLinear(of(m.weight), of(m.bias), step, conv1d=isinstance(m, Conv1D))
        elif isinstance(m, nn.Embedding):
            new = GroupedEmbedding(of(m.weight), m.padding_idx, step)
        elif isinstance(m, nn.LayerNorm):
            new = GroupedLayerNorm(of(m.weight), of(m.bias), m.eps, step)
        elif _is_rms(m):
            new = GroupedRMSNorm(of(m.weight), getattr(m, "variance_epsilon", getattr(m, "eps", 1e-6)), step)
        else:
            raise TypeError(f"cannot group a {type(m).__name__} layer")
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return model, step, {name: stacked[id(p)] for name, p in originals.items()}


class GroupedAdamW(torch.optim.Optimizer):
    """torch.optim.AdamW (weight decay 0, the devices' setting) over stacked parameters, elementwise
    as AdamW is, with device i's learning rate `lrs[i]` at each step and only the first `step.k`
    devices updated (the others have finished)."""

    def __init__(
        self,
        params: list[nn.Parameter],
        schedules: list[Callable[[int], float]],
        step: _Step,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, {"betas": betas, "eps": eps})
        self.schedules, self.group_step, self.t = schedules, step, 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        k, self.t = self.group_step.k, self.t + 1
        lrs = torch.tensor([f(self.t - 1) for f in self.schedules[:k]], dtype=torch.float64)
        for g in self.param_groups:
            b1, b2 = g["betas"]
            c1, c2 = 1 - b1**self.t, math.sqrt(1 - b2**self.t)
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                grad, m, v = p.grad[:k], st["m"][:k], st["v"][:k]
                m.lerp_(grad, 1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                size = (lrs / c1).to(device=p.device, dtype=p.dtype).reshape(k, *[1] * (p.dim() - 1))
                p[:k].sub_(size * m / ((v.sqrt() / c2).add_(g["eps"])))
        return loss


class GroupedBatches(IterableDataset):
    """Step t's batch of the devices still training at t (a prefix: devices sorted by steps, most
    first): each device's next batch from its own loader (the one it would read alone, epochs
    repeating), padded to a common width and row count with rows and columns no loss reads."""

    def __init__(self, loaders: list[DataLoader], steps: list[int], pad_id: int) -> None:
        self.loaders, self.steps, self.pad_id = loaders, steps, pad_id

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        def cycle(data: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
            while True:  # as Lightning reads epochs: len(data) batches, never asking past the last
                # (a shuffling sampler asked past its end draws once more from the loader's generator)
                batches = iter(data)
                for _ in range(len(data)):
                    yield next(batches)

        streams = [cycle(d) for d in self.loaders]
        for t in range(max(self.steps)):
            k = sum(s > t for s in self.steps)
            batches = [next(streams[i]) for i in range(k)]
            rows = max(len(b["input_ids"]) for b in batches)
            width = max(b["input_ids"].shape[1] for b in batches)
            out = {
                "input_ids": torch.full((k, rows, width), self.pad_id, dtype=torch.long),
                "labels": torch.full((k, rows, width), IGNORE, dtype=torch.long),
                "attention_mask": torch.ones((k, rows, width), dtype=torch.long),  # a filler row attends
            }
            for i, b in enumerate(batches):
                r, w = b["input_ids"].shape
                out["attention_mask"][i, :r] = 0
                for key, value in b.items():
                    out[key][i, :r, :w] = value
            yield {key: value.reshape(k * rows, width) for key, value in out.items()} | {"k": k}


class GroupedDevices(L.LightningModule):
    """Trains the stacked devices: each device's loss is the mean negative log-likelihood of its own
    answer tokens in its batch (transformers' causal-LM loss), summed over the devices."""

    def __init__(self, model: nn.Module, step: _Step, schedules: list[Callable[[int], float]]) -> None:
        super().__init__()
        self.model, self.group_step, self.schedules = model, step, schedules
        self.losses: list[list[float]] = [[] for _ in schedules]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        k = int(batch.pop("k"))
        labels = batch.pop("labels")
        self.group_step.k, self.group_step.rows = k, len(labels)
        logits = self.model(**batch).logits.float()
        target = F.pad(labels, (0, 1), value=IGNORE)[:, 1:]
        nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE, reduction="none")
        tokens = (target != IGNORE).reshape(k, -1).sum(1)
        per_device = nll.reshape(k, -1).sum(1) / tokens.clamp_min(1)
        for i, value in enumerate(per_device.tolist()):
            self.losses[i].append(value)
        loss = per_device.sum()
        self.log("device/train_loss", loss / k, on_step=True, batch_size=len(labels))
        return loss

    def configure_optimizers(self):
        return GroupedAdamW(
            [p for p in self.model.parameters() if p.requires_grad], self.schedules, self.group_step
        )


def fit_grouped(
    base: nn.Module,
    loaders: list[DataLoader],
    steps: list[int],
    lrs: list[float],
    pad_id: int,
    trainers: Trainers,
) -> tuple[list[dict[str, torch.Tensor]], list[list[float]]]:
    """Train one copy of `base` per loader together, device i for `steps[i]` optimizer steps at peak
    rate `lrs[i]` (the devices' warm-up + cosine schedule): `base` is grouped in place. Returns each
    device's trained parameters by name (tied names share a tensor) and its per-step losses, in the
    loaders' order."""
    n = len(loaders)
    order = sorted(range(n), key=lambda i: -steps[i])  # the devices still training: a prefix of the stack
    model, step, stacked = group(base, n)
    schedules = [(lambda f, lr: lambda t: lr * f(t))(warmup_cosine(steps[i]), lrs[i]) for i in order]
    module = GroupedDevices(model, step, schedules)
    data = GroupedBatches([loaders[i] for i in order], [steps[i] for i in order], pad_id)
    trainers.fit(module, DataLoader(data, batch_size=None), max(steps))
    params: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    losses: list[list[float]] = [[] for _ in range(n)]
    for slot, i in enumerate(order):
        params[i] = {name: p.detach()[slot] for name, p in stacked.items()}
        losses[i] = module.losses[slot]
    return params, losses
