"""FedJETS (Dun et al. 2023) as we read it: rounds of local MoEs pruned to a few experts, averaged
per expert on the server."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.deepfusion.accounting import comm
from edgeai_repro.deepfusion.data.encoding import QADataset, loader
from edgeai_repro.deepfusion.devices.training import DeviceLLM, FinetuneConf
from edgeai_repro.deepfusion.evaluation.scores import evaluate
from edgeai_repro.deepfusion.models import catalog, moe
from edgeai_repro.deepfusion.planning.phases import Phase, Shape
from edgeai_repro.deepfusion.server.methods.base import Fused, Method, Server, epochs_to_steps


@dataclass
class FedJETS(Method):
    """FedJETS (Dun et al. 2023) as we read it: in each round a seeded sample of the devices
    (`participation`) each downloads a local MoE holding the anchor expert every token uses (the
    MoE's shared expert: trained by every participant, so it is averaged over all of them) and
    the `local_experts` routed experts its data routes to most under the current gate, trains it
    for `local_epochs` passes over its own data, and uploads it; the server averages every
    parameter over the devices that hold it, weighted by their data sizes (FedAvg).

    Its rounds are a device-side choice, made by the step-selection protocol on data FedJETS could
    see in deployment (with `select.every` > 0): each device holds out `fedjets.val_fraction` of
    its records (at least one) from its local training and reports the global model's loss on
    them before the first round and after each (federated evaluation); the global model ends with
    the weights of the round whose pooled held-out answer log-perplexity is lowest, within the
    `rounds` cap (stopping after `select.patience` rounds without a better one, when set).
    `select.every=0`: every record trains and all rounds run (the fixed budget)."""

    name: str = "fedjets"
    traffic: str = "fedjets"

    def __call__(self, s: Server) -> Fused:
        f = s.conf.fedjets
        global_model = s.init_moe().to(s.device)  # scored and routed on the cell's accelerator
        keep = comm.pruned_moe_config(s.moe_config, f.local_experts).num_experts
        per_round = max(1, round(f.participation * len(s.devices)))
        test = s.heldout()
        own, held = _held_out(s, f.val_fraction if s.conf.select.every else 0.0)
        val = s.validation(held) if held else None
        best = (0, float("inf"), None)  # round, pooled held-out log-ppl, its state (host)
        curve: list[dict] = []

        def score(rnd: int) -> None:
            nonlocal best
            curve.append(
                {
                    "method": "fedjets",
                    "curve": "held-out log-ppl by round",
                    "step": rnd,
                    "value": evaluate(global_model, test, s.device)["log_ppl"],
                }
            )
            if val is None:
                return
            loss = evaluate(global_model, val, s.device)["log_ppl"]
            curve.append(
                {
                    "method": "fedjets",
                    "curve": "devices' validation log-ppl by round",
                    "step": rnd,
                    "value": loss,
                }
            )
            if loss < best[1]:
                best = (
                    rnd,
                    loss,
                    {k: v.detach().to("cpu", copy=True) for k, v in global_model.state_dict().items()},
                )

        score(0)
        for rnd in range(f.rounds):
            rng = torch.Generator().manual_seed(derive_seed("fedjets-sample", rnd, s.seed) % 2**62)
            picked = sorted(torch.randperm(len(s.devices), generator=rng)[:per_round].tolist())
            chosen_devices = [s.devices[i] for i in picked]
            sums: dict[str, torch.Tensor] = {}
            weights: dict[str, torch.Tensor] = {}
            for d in chosen_devices:
                records = own[d.index]
                ds = QADataset(records, s.moe_tok, s.conf.data.max_len)
                chosen = _top_experts(global_model, ds, keep)
                local = _prune(global_model, s.moe_config, chosen).to(s.setup.train_dtype)
                steps = epochs_to_steps(f.local_epochs, len(records), s.conf.device.batch_size)
                module = DeviceLLM(
                    local,
                    FinetuneConf(mode="full", lr=s.conf.device.full_lr or s.conf.device.lr, steps=steps),
                )
                micro, accum = s.setup.batching("fedjets", s.conf.device.batch_size)
                s.fit(
                    module,
                    loader(ds, micro, derive_seed("fedjets", rnd, d.index, s.seed) % 2**62, True),
                    steps,
                    accum,
                )
                _accumulate(sums, weights, local, chosen, s.moe_config.num_experts, float(len(records)))
            state = global_model.state_dict()
            for name, total in sums.items():
                w = weights[name]
                upd = (
                    total / w.clamp_min(1e-12).reshape(-1, *([1] * (total.dim() - 1)))
                    if w.dim()
                    else total / w
                )
                if w.dim():  # experts nobody trained keep their weights
                    upd = torch.where((w > 0).reshape(-1, *([1] * (total.dim() - 1))), upd, state[name].cpu())
                state[name] = upd.to(state[name].dtype)
            global_model.load_state_dict(state)  # copied onto the model's device
            score(rnd + 1)
            patience = s.conf.select.patience
            if val is not None and patience and rnd + 1 - best[0] >= patience:
                break  # select.patience rounds in a row without a better held-out score
        rounds = f.rounds
        if best[2] is not None:
            rounds = best[0]
            global_model.load_state_dict(best[2])
        return Fused(global_model, metrics={"rounds": float(rounds)}, curves=curve)

    def phases(self, shape: Shape) -> list[Phase]:
        c, f = shape.conf, shape.conf.fedjets
        local = comm.pruned_moe_config(shape.moe_config, f.local_experts)
        per_round = max(1, round(f.participation * c.devices))
        runs = f.rounds * per_round
        steps = runs * epochs_to_steps(f.local_epochs, c.data.train_samples / c.devices, c.device.batch_size)
        return [
            Phase(
                "fedjets",
                "local MoE training on devices",
                f"{shape.setup.case.moe} local "
                f"({local.num_experts} of {shape.moe_config.num_experts} experts)",
                local,
                "full",
                c.device.batch_size,
                steps,
                runs=runs,
            )
        ]


def _held_out(s: Server, fraction: float) -> tuple[dict[int, list], list]:
    """Each device's training records and, pooled, the records the devices hold out for choosing
    the rounds: the last `fraction` of each device's records (at least one; none at 0)."""
    own, held = {}, []
    for d in s.devices:
        records = [s.corpus.train[i] for i in d.indices]
        cut = len(records) - (max(1, round(fraction * len(records))) if fraction > 0 else 0)
        own[d.index] = records[:cut]
        held.extend(records[cut:])
    return own, held


@torch.no_grad()
def _top_experts(model: nn.Module, ds: QADataset, keep: int) -> list[int]:
    usage = torch.zeros(model.config.num_experts)
    batch = ds.collate([ds[i] for i in range(min(len(ds), 32))])
    device = next(model.parameters()).device
    out = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        output_router_logits=True,
    )
    for logits in out.router_logits or []:
        usage += torch.softmax(logits.float(), -1).sum(0).cpu()
    return sorted(usage.topk(keep).indices.tolist())


def _prune(model: nn.Module, config, chosen: list[int]) -> nn.Module:
    local = catalog.real_model(moe.with_experts(config, len(chosen)))
    state = {}
    for name, value in model.state_dict().items():
        state[name] = value[chosen] if moe.is_expert(name) or moe.is_router(name) else value
    local.load_state_dict(state)
    return local


def _accumulate(
    sums: dict, weights: dict, local: nn.Module, chosen: list[int], n_global: int, w: float
) -> None:
    """Add a device's local MoE, weighted by its data size: experts and router rows into their
    global slots, everything else into one running sum."""
    idx = torch.tensor(chosen)
    for name, value in local.state_dict().items():
        if moe.is_expert(name) or moe.is_router(name):
            if name not in sums:
                sums[name] = torch.zeros((n_global, *value.shape[1:]))
                weights[name] = torch.zeros(n_global)
            sums[name].index_add_(0, idx, value.float() * w)
            weights[name].index_add_(0, idx, torch.full((len(chosen),), w))
        else:
            sums[name] = sums.get(name, 0) + value.float() * w
            weights[name] = weights.get(name, torch.tensor(0.0)) + w
