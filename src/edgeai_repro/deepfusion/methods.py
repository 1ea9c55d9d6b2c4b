"""The server-side methods behind one interface: each turns the trained devices into a global MoE.

  deepfusion  - Phase I clustering and proxies, Phase II VAA distillation into K base models,
                Phase III merge and tuning with experts frozen (the paper);
  ofa_kd      - the same pipeline with OFA-KD's feature-to-logit distillation instead of VAA;
  fedmkt      - the global MoE distils the devices' final logits on the public data (the paper's
                "FedKMT"), token-aligned, picking per sample the device with the lowest answer loss;
  fedjets     - federated MoE: per round a sample of the devices each trains a local MoE (the
                shared "anchor" expert plus the routed experts its data routes to most) on its own
                data; the server averages each expert over the devices that trained it;
  server_only - the global MoE trained on the public data alone, no devices (the floor a
                knowledge-transfer claim must beat);
  centralized - the MoE trained on the pooled device data (the upper bound; DeepSpeed-MoE in the paper).

Every method starts from the same global MoE initialisation (the stand-in for the pretrained
checkpoint) and ends with the same architecture: K routed experts. The server-side learners
(fedmkt, server_only) take as many optimizer steps as DeepFusion's server (`Server.budget`); OFA-KD
runs DeepFusion's pipeline and so has its budget by construction.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.core.store import atomic_write, content_key
from edgeai_repro.core.trainer import Trainers
from edgeai_repro.deepfusion import align, archs, catalog, checkpoints, comm, data, moe, on_device, phase1
from edgeai_repro.deepfusion.device_llm import DeviceLLM, FinetuneConf, QADataset, evaluate, loader
from edgeai_repro.deepfusion import config as dfc
from edgeai_repro.deepfusion.config import KDConf
from edgeai_repro.deepfusion.distill import Distiller, KDDataset, add_teacher, kd_loader

log = logging.getLogger(__name__)


@dataclass
class Server:
    """What every method gets: the run's settings, data, trained devices and the global MoE's setup."""

    c: DictConfig
    seed: int
    corpus: on_device.Corpus
    devices: list[on_device.Device]
    cache: Path
    trainers: Trainers
    moe_config: object            # K experts
    moe_tok: object
    checkpoints: dict = field(default_factory=dict)   # local checkpoint folders by model (paths.checkpoints)

    @property
    def kd(self) -> KDConf:
        return KDConf(**{**OmegaConf.to_container(self.c.kd, resolve=True), "max_len": self.c.data.max_len})

    def init_moe(self) -> nn.Module:
        """The global MoE's starting point, shared by every method: the pretrained checkpoint's
        stand-in. At scale=tiny a seeded initialisation trained for `pretrain.steps` on the server's
        public data (it learns the language and the answer format, and, with hidden public
        answers, no fact), stored once per (model, public data, seed) and loaded by every method.
        A random start would not stand in for a pretrained one: K students trained apart from it
        drift so far that averaging their shared weights (the merge) undoes them."""
        if self.c.models == "paper":
            return self._published_moe()
        torch.manual_seed(derive_seed("moe-init", self.c.device.init_seed) % 2**62)
        model = catalog.real_model(self.moe_config)
        steps = int(self.c.pretrain.steps)
        if not steps:
            return model
        blob = {"config": self.moe_config.to_dict(), "public": [data.text_of(r) for r in self.corpus.public],
                "pretrain": OmegaConf.to_container(self.c.pretrain, resolve=True), "tune": self.c.tune.aux_loss,
                "batch": self.kd.batch_size, "max_len": self.c.data.max_len, "init_seed": self.c.device.init_seed,
                "seed": self.seed, "version": 2}   # 2: context-first truncation
        path = self.cache / "inits" / f"{content_key(blob)}.safetensors"
        if path.exists():
            model.load_state_dict(load_file(str(path)))
            return model
        tune(self, model, steps, self.corpus.public, freeze=False, label="pretrain", lr=self.c.pretrain.lr, out=Fused())
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, str(tmp)))
        return model

    def base_model(self, init: nn.Module, expert: int) -> nn.Module:
        """M_i initialised from the global MoE's init: its shared parts and its expert `expert`."""
        base = catalog.real_model(moe.base_config(self.moe_config))
        source, state = init.state_dict(), {}
        for name, value in base.state_dict().items():
            src = source[name]
            state[name] = src[expert:expert + 1] if moe.is_expert(name) else (value if moe.is_router(name) else src)
        base.load_state_dict(state)
        return base

    def _published_moe(self) -> nn.Module:
        """Paper scale: the published MoE (checkpoints.pretrained), keeping in every layer the K
        experts the public data routes to most, so that DeepFusion's K domains start from them."""
        name = dfc.case(self.c).moe
        full = checkpoints.pretrained(archs.get(self.c, name), self.checkpoints.get(name)).to(self.device)
        ds = QADataset(self.corpus.public[:64], self.moe_tok, self.c.data.max_len)
        usage = checkpoints.expert_usage(full, list(loader(ds, 16, 0, False)))
        return checkpoints.keep_experts(full, self.moe_config, usage).cpu()   # Lightning moves what trains

    @property
    def budget(self) -> int:
        """Server optimizer steps of a learning baseline: the method's `steps`, or DeepFusion's own
        (K domains x kd.steps of distillation + tune.steps of Phase III)."""
        steps = self.c.method.get("steps")
        return int(steps) if steps else self.moe_config.num_experts * self.c.kd.steps + self.c.tune.steps

    def heldout(self, n: int = 64):
        return loader(QADataset(self.corpus.test[:n], self.moe_tok, self.c.data.max_len), 32, 0, False)

    def fit(self, module: L.LightningModule, data, steps: int) -> None:
        self.trainers.fit(module, data, steps)

    @property
    def device(self) -> str:
        """Where the server's forward-only passes run (teacher targets): the cell's accelerator."""
        return "cuda" if self.trainers.accelerator == "gpu" and torch.cuda.is_available() else "cpu"

    def add_targets(self, ds: KDDataset, members: list[on_device.Device], kd: KDConf, with_features: bool) -> None:
        """Append to every public item the targets of the teacher made of `members`' uploads (their
        proxy), computed batched on the accelerator once per (teacher, public data, settings) and
        stored under the cell store (`targets/`): DeepFusion, OFA-KD and every ablation over the
        same devices read the same file, and a cache hit builds no teacher."""
        t = members[0].model_type
        teacher_tok = on_device.tokenizer_for(self.c, t, self.corpus, self.cache, self.checkpoints)
        blob = {"teacher": sorted(m.folder.name for m in members), "type": t,
                "public": content_key([data.text_of(r) for r in self.corpus.public]),
                "student_tok": align.fingerprint(self.moe_tok), "teacher_tok": align.fingerprint(teacher_tok),
                "kd": {k: getattr(kd, k) for k in ("topk", "temperature", "stages", "queries", "tok_align", "max_len",
                                                   "batch_size")},
                "features": with_features, "version": 1}
        path = self.cache / "targets" / f"{content_key(blob)}.pt"
        try:
            stored = torch.load(path, weights_only=True) if path.exists() else None
        except Exception:  # noqa: BLE001 - a damaged file is recomputed, not trusted
            stored = None
        if stored is not None and len(stored) == len(ds.items):
            for item, target in zip(ds.items, stored):
                item["targets"].append(target)
            return
        teacher = phase1.proxy(self.c, t, [m.upload() for m in members], self.checkpoints)
        mapping = align.vocab_map(teacher_tok, self.moe_tok, kd.tok_align, cache=self.cache)
        add_teacher(ds, self.corpus.public, teacher, teacher_tok, self.moe_tok, kd, mapping, with_features, self.device)
        targets = [item["targets"][-1] for item in ds.items]
        atomic_write(path, lambda tmp: torch.save(targets, tmp))


def _steps(epochs: float, samples: int, batch: int) -> int:
    return max(1, math.ceil(epochs * samples / batch))


@dataclass
class Fused:
    """What a method returns: the global MoE, scalar diagnostics for the cell's record, and curves."""

    model: nn.Module | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    curves: list[dict] = field(default_factory=list)


def _distill_domains(s: Server, kd: KDConf, label: str, out: Fused) -> list[nn.Module]:
    """Phase I + II: one base model per knowledge domain, distilled from the domain's proxy."""
    doms = phase1.cluster(s.c, s.seed, s.corpus, s.devices)
    out.metrics.update(purity_domains=doms.purity_domains, purity_embedding=doms.purity_embedding)
    init = s.init_moe()
    bases, per_domain = [], {"student_ppl_before": [], "student_ppl_after": [], "fm_first": [], "fm_last": []}
    for i, members in enumerate(doms.members(s.devices)):
        ds = KDDataset(s.corpus.public, s.moe_tok, kd.max_len)
        s.add_targets(ds, members, kd, with_features=True)
        stages = [int(f.shape[-1]) for f in ds.items[0]["targets"][-1]["feats"]]   # the teacher's width per stage
        # The student's and VAA's random parts from their own seed: a cell's result must not depend on
        # whether the teacher was built (a targets-cache miss) or read back (a hit).
        torch.manual_seed(derive_seed("distill", i, s.seed) % 2**62)
        student = s.base_model(init, i % s.moe_config.num_experts)
        module = Distiller(student, kd, stages, heldout=s.heldout(), eval_every=max(1, kd.steps // 5))
        s.fit(module, kd_loader(ds, kd.batch_size, derive_seed("kd", i, s.seed) % 2**62), kd.steps)
        for step, h in enumerate(module.history):
            out.curves += [{"method": label, "curve": f"L_{k} (domain {i})", "step": step, "value": h[k]}
                           for k in ("ce", "fm", "kl")]
        out.curves += [{"method": label, "curve": f"student held-out log-ppl (domain {i})", "step": st, "value": v}
                       for st, v in module.heldout_curve]
        per_domain["student_ppl_before"].append(module.heldout_curve[0][1])
        per_domain["student_ppl_after"].append(module.heldout_curve[-1][1])
        fm = [h["fm"] for h in module.history]
        q = max(1, len(fm) // 5)
        per_domain["fm_first"].append(sum(fm[:q]) / q)
        per_domain["fm_last"].append(sum(fm[-q:]) / q)
        bases.append(student)
    out.metrics.update({k: sum(v) / len(v) for k, v in per_domain.items() if v})  # means over the domains
    return bases


def tune(s: Server, model: nn.Module, steps: int, records, freeze: bool, label: str, lr: float,
         out: Fused) -> nn.Module:
    """Phase III (experts frozen) or plain training of the MoE on `records` with the router's
    load-balancing loss."""
    if freeze:
        moe.freeze_experts(model)
    model.config.output_router_logits = True
    model.config.router_aux_loss_coef = s.c.tune.aux_loss
    ds = KDDataset(records, s.moe_tok, s.c.data.max_len)
    for item in ds.items:
        item["targets"].append(None)
    conf = replace(s.kd, kd="none", alpha=0.0, beta=0.0, lr=lr, steps=steps)
    module = Distiller(model, conf)
    s.fit(module, kd_loader(ds, conf.batch_size, derive_seed("tune", label, s.seed) % 2**62), steps)
    out.curves += [{"method": label, "curve": "tuning loss", "step": i, "value": h["ce"]}
                   for i, h in enumerate(module.history)]
    model.config.output_router_logits = False
    return model


def deepfusion(s: Server, label: str = "deepfusion", kd: KDConf | None = None) -> Fused:
    out = Fused()
    bases = _distill_domains(s, kd or s.kd, label, out)
    merged = moe.merge(bases, s.moe_config, seed=derive_seed("router", s.seed) % 2**62)
    out.model = tune(s, merged, s.c.tune.steps, s.corpus.public, freeze=True, label=label, lr=s.c.tune.lr, out=out)
    return out


def ofa_kd(s: Server) -> Fused:
    return deepfusion(s, "ofa_kd", replace(s.kd, kd="ofa"))


def fedmkt(s: Server) -> Fused:
    """Devices send their top-k next-token distributions on the public data (FedMKT's exchange;
    the server computes them here from the uploads, which gives the same numbers); the global MoE
    distils them, per sample from the device with the lowest answer loss. Traffic: what is sent,
    an fp16 probability and an int32 token id per kept entry (the reverse, server-to-device
    direction of FedMKT's mutual transfer is not run, so not counted)."""
    kd = replace(s.kd, kd="none", steps=s.budget)
    ds = KDDataset(s.corpus.public, s.moe_tok, kd.max_len)
    sent = 0
    for d in s.devices:
        s.add_targets(ds, [d], kd, with_features=False)
        sent += sum(item["targets"][-1]["ids"].numel() for item in ds.items) * (2 + 4)
    for item in ds.items:  # FedMKT's selection: the device whose answer loss on this sample is lowest
        item["pick"] = min(range(len(item["targets"])), key=lambda j: item["targets"][j]["ce"])
    model = s.init_moe()
    module = Distiller(model, kd)
    s.fit(module, kd_loader(ds, kd.batch_size, derive_seed("fedmkt", s.seed) % 2**62), kd.steps)
    return Fused(model, metrics={"comm_gb": sent / comm.GB, "server_steps": float(kd.steps)},
                 curves=[{"method": "fedmkt", "curve": f"L_{k}", "step": i, "value": h[k]}
                         for i, h in enumerate(module.history) for k in ("ce", "kl")])


def fedjets(s: Server) -> Fused:
    """FedJETS (Dun et al. 2023) as we read it: in each round a seeded sample of the devices
    (`participation`) each downloads a local MoE holding the anchor expert every token uses (the
    MoE's shared expert: trained by every participant, so it is averaged over all of them) and
    the `local_experts` routed experts its data routes to most under the current gate, trains it
    for `local_epochs` passes over its own data, and uploads it; the server averages every
    parameter over the devices that hold it, weighted by their data sizes (FedAvg)."""
    f = s.c.fedjets
    global_model = s.init_moe()
    keep = comm.pruned_moe_config(s.moe_config, f.local_experts).num_experts
    per_round = max(1, round(f.participation * len(s.devices)))
    test = s.heldout()
    curve = [{"method": "fedjets", "curve": "held-out log-ppl by round", "step": 0,
              "value": evaluate(global_model, test)["log_ppl"]}]
    for rnd in range(f.rounds):
        rng = torch.Generator().manual_seed(derive_seed("fedjets-sample", rnd, s.seed) % 2**62)
        picked = sorted(torch.randperm(len(s.devices), generator=rng)[:per_round].tolist())
        chosen_devices = [s.devices[i] for i in picked]
        sums: dict[str, torch.Tensor] = {}
        weights: dict[str, torch.Tensor] = {}
        for d in chosen_devices:
            records = [s.corpus.train[i] for i in d.indices]
            ds = QADataset(records, s.moe_tok, s.c.data.max_len)
            chosen = _top_experts(global_model, ds, keep)
            local = _prune(global_model, s.moe_config, chosen)
            steps = _steps(f.local_epochs, len(records), s.c.device.batch_size)
            module = DeviceLLM(local, FinetuneConf(mode="full", lr=s.c.device.lr, steps=steps))
            s.fit(module, loader(ds, s.c.device.batch_size, derive_seed("fedjets", rnd, d.index, s.seed) % 2**62, True),
                  steps)
            _accumulate(sums, weights, local, chosen, s.moe_config.num_experts, float(len(records)))
        state = global_model.state_dict()
        for name, total in sums.items():
            w = weights[name]
            upd = total / w.clamp_min(1e-12).reshape(-1, *([1] * (total.dim() - 1))) if w.dim() else total / w
            if w.dim():  # experts nobody trained keep their weights
                upd = torch.where((w > 0).reshape(-1, *([1] * (total.dim() - 1))), upd, state[name])
            state[name] = upd.to(state[name].dtype)
        global_model.load_state_dict(state)
        curve.append({"method": "fedjets", "curve": "held-out log-ppl by round", "step": rnd + 1,
                      "value": evaluate(global_model, test)["log_ppl"]})
    return Fused(global_model, metrics={"rounds": float(f.rounds)}, curves=curve)


@torch.no_grad()
def _top_experts(model: nn.Module, ds: QADataset, keep: int) -> list[int]:
    usage = torch.zeros(model.config.num_experts)
    batch = ds.collate([ds[i] for i in range(min(len(ds), 32))])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_router_logits=True)
    for logits in out.router_logits or []:
        usage += torch.softmax(logits.float(), -1).sum(0)
    return sorted(usage.topk(keep).indices.tolist())


def _prune(model: nn.Module, config, chosen: list[int]) -> nn.Module:
    local = catalog.real_model(moe.with_experts(config, len(chosen)))
    state = {}
    for name, value in model.state_dict().items():
        state[name] = value[chosen] if moe.is_expert(name) or moe.is_router(name) else value
    local.load_state_dict(state)
    return local


def _accumulate(sums: dict, weights: dict, local: nn.Module, chosen: list[int], n_global: int, w: float) -> None:
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


def centralized(s: Server) -> Fused:
    out = Fused()
    steps = _steps(s.c.device.epochs, len(s.corpus.train), s.c.device.batch_size)
    out.model = tune(s, s.init_moe(), steps, s.corpus.train, freeze=False, label="centralized", lr=s.c.device.lr,
                     out=out)
    return out


def server_only(s: Server) -> Fused:
    """The global MoE trained on the server's public data alone, for DeepFusion's step budget:
    what the server knows without any device (the floor for "knowledge reached it from the devices")."""
    out = Fused(metrics={"server_steps": float(s.budget)})
    out.model = tune(s, s.init_moe(), s.budget, s.corpus.public, freeze=False, label="server_only", lr=s.c.kd.lr,
                     out=out)
    return out


@dataclass
class Method:
    """A server-side method, instantiated from its config option (conf/deepfusion/method/<name>.yaml,
    `_target_`): it turns the trained devices into the global MoE. The options here run one of this
    module's functions (`run`); a new method is one YAML and one subclass overriding __call__."""

    name: str = "deepfusion"
    run: str = "deepfusion"      # deepfusion | ofa_kd | fedmkt | fedjets | server_only | centralized (a function here)
    needs_devices: bool = True   # False: the method never sees the devices (centralised bound, server-only floor)
    traffic: str = "uploads"     # uploads (models + embeddings) | models (no embedding) | fedjets | logits | none
    steps: Optional[int] = None  # fedmkt, server_only: server optimizer steps; None = DeepFusion's (Server.budget)

    def __call__(self, s: Server) -> Fused:
        return RUNS[self.run](s)


def build(node) -> Method:
    """Instantiate the configured method (`deepfusion.method` holds its `_target_`)."""
    from hydra.utils import instantiate

    method = instantiate(node) if not isinstance(node, Method) else node
    if not isinstance(method, Method):
        raise TypeError(f"deepfusion.method builds a {type(method).__name__}, not a methods.Method")
    return method


RUNS = {name: globals()[name] for name in dfc.RUNS}
