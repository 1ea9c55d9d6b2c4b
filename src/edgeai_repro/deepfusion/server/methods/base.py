"""What every server-side method shares: the `Method` interface, the `Server` a method works with,
and the steps several methods run (the global MoE's start, teacher targets, Phase II, tuning).

A method is one class in its own module of this package (deepfusion.py, ofa_kd.py, fedmkt.py,
fedjets.py, server_only.py, centralized.py), named by the `_target_` of its YAML in
conf/deepfusion/method/. Every method starts from the same global MoE initialisation (the stand-in
for the pretrained checkpoint) and ends with the same architecture: K routed experts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from edgeai_repro.core import cache
from edgeai_repro.core.files import content_key
from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.core.trainer import Trainers
from edgeai_repro.deepfusion.config import KDConf
from edgeai_repro.deepfusion.data.encoding import QADataset, loader
from edgeai_repro.deepfusion.data.records import text_of
from edgeai_repro.deepfusion.devices.federation import Device
from edgeai_repro.deepfusion.models import catalog, checkpoints, moe
from edgeai_repro.deepfusion.planning.phases import Forward, Phase, Shape, server_budget
from edgeai_repro.deepfusion.server import align
from edgeai_repro.deepfusion.server.clustering import proxy
from edgeai_repro.deepfusion.server.distill import Distiller, KDDataset, add_teacher, kd_loader
from edgeai_repro.deepfusion.server.selection import KeepBest
from edgeai_repro.deepfusion.setup import Setup

INITS = cache.get("deepfusion/inits")
TARGETS = cache.get("deepfusion/targets")


@dataclass
class Fused:
    """What a method returns: the global MoE, scalar diagnostics for the cell's record, and curves."""

    model: nn.Module | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    curves: list[dict] = field(default_factory=list)


@dataclass
class Server:
    """What every method gets: the cell's setup, the trained devices and the global MoE's shape."""

    setup: Setup
    devices: list[Device]
    trainers: Trainers
    moe_config: object  # K experts
    moe_tok: object
    budget_steps: int | None = None  # the method's own server steps (None: DeepFusion's budget)

    @property
    def conf(self):
        return self.setup.conf

    @property
    def seed(self) -> int:
        return self.setup.seed

    @property
    def corpus(self):
        return self.setup.corpus

    @property
    def kd(self) -> KDConf:
        return self.setup.kd

    @property
    def device(self) -> str:
        return self.setup.device

    def init_moe(self) -> nn.Module:
        """The global MoE's starting point, shared by every method: the pretrained checkpoint's
        stand-in. At scale=tiny a seeded initialisation trained for `pretrain.steps` on the server's
        public data (it learns the language, the answer format and the public records' facts,
        none of which the test asks about), stored once per (model, public data, seed) in the cache
        "deepfusion/inits" and loaded by every method. A random start would not stand in for a
        pretrained one: K students trained apart from it drift so far that averaging their shared
        weights (the merge) undoes them."""
        c = self.conf
        if c.models == "paper":
            return self._published_moe().to(self.setup.train_dtype)
        torch.manual_seed(derive_seed("moe-init", c.device.init_seed) % 2**62)
        model = catalog.real_model(self.moe_config)
        steps = int(c.pretrain.steps)
        if not steps:
            return model.to(self.setup.train_dtype)
        inputs = {
            "config": self.moe_config.to_dict(),
            "public": [text_of(r) for r in self.corpus.public],
            "pretrain": {"steps": c.pretrain.steps, "lr": c.pretrain.lr},
            "tune": c.tune.aux_loss,
            "batch": self.kd.batch_size,
            "max_len": c.data.max_len,
            "init_seed": c.device.init_seed,
            "seed": self.seed,
        }
        path = INITS.path(self.setup.store, inputs, ".safetensors")

        def pretrain() -> dict[str, torch.Tensor]:
            tune(
                self,
                model,
                steps,
                self.corpus.public,
                freeze=False,
                label="pretrain",
                lr=c.pretrain.lr,
                out=Fused(),
                phase="server",
                select=False,
            )
            return {k: v.contiguous() for k, v in model.state_dict().items()}

        # cells of one case pretrain the same start: the first computes it, the others wait and read it
        state = INITS.load_or_make(
            path,
            lambda p: load_file(str(p)),
            pretrain,
            lambda p, st: INITS.write(p, lambda tmp: save_file(st, str(tmp))),
        )
        model.load_state_dict(state)
        return model.to(self.setup.train_dtype)

    def base_model(self, init: nn.Module, expert: int) -> nn.Module:
        """M_i initialised from the global MoE's init: its shared parts and its expert `expert`."""
        base = catalog.real_model(moe.base_config(self.moe_config))
        source, state = init.state_dict(), {}
        for name, value in base.state_dict().items():
            src = source[name]
            state[name] = (
                src[expert : expert + 1] if moe.is_expert(name) else (value if moe.is_router(name) else src)
            )
        base.load_state_dict(state)
        return base.to(self.setup.train_dtype)

    def _published_moe(self) -> nn.Module:
        """Paper scale: the published MoE (checkpoints.pretrained), keeping in every layer the K
        experts the public data routes to most, so that DeepFusion's K domains start from them."""
        name = self.setup.case.moe
        full = checkpoints.pretrained(
            self.setup.family(name), self.setup.folders.get(name), attention=str(self.conf.attention)
        ).to(self.device)
        ds = QADataset(self.corpus.public[:64], self.moe_tok, self.conf.data.max_len)
        usage = checkpoints.expert_usage(full, list(loader(ds, 16, 0, False)))
        return checkpoints.keep_experts(full, self.moe_config, usage).cpu()  # Lightning moves what trains

    @property
    def budget(self) -> int:
        """Server optimizer steps of a learning baseline (planning.phases.server_budget)."""
        return server_budget(self.moe_config, self.conf, self.budget_steps)

    def heldout(self, n: int = 64):
        return loader(QADataset(self.corpus.test[:n], self.moe_tok, self.conf.data.max_len), 32, 0, False)

    def fit(
        self,
        module: L.LightningModule,
        data,
        steps: int,
        accumulate: int = 1,
        select: nn.Module | None = None,
        val: list | None = None,
    ) -> int:
        """Train `module` for at most `steps`; with `select` (the model being trained) and
        `select.every` > 0, by the step-selection protocol (selection.py) on `val` (default: the
        public validation records): returns the optimizer step whose weights `select` ends with
        (`steps` without selection)."""
        every = self.conf.select.every
        keep = (
            KeepBest(select, self.validation(val), every, self.conf.select.patience)
            if select is not None and every
            else None
        )
        self.trainers.fit(
            module,
            data,
            steps,
            callbacks=[keep] if keep else None,
            **({"accumulate_grad_batches": accumulate} if accumulate > 1 else {}),
        )
        return keep.step if keep else steps

    def validation(self, records: list | None = None):
        """Validation records as the step selection scores them: `records`, else the public ones (Corpus.val)."""
        records = self.corpus.val if records is None else records
        return loader(QADataset(records, self.moe_tok, self.conf.data.max_len), 32, 0, False)

    def add_targets(self, ds: KDDataset, members: list[Device], kd: KDConf, with_features: bool) -> None:
        """Append to every public item the targets of the teacher made of `members`' uploads (their
        proxy), computed batched on the accelerator once per (teacher, public data, settings) and
        stored in the cache "deepfusion/targets": DeepFusion, OFA-KD and every ablation over the
        same devices read the same file, and a cache hit builds no teacher."""
        t = members[0].model_type
        teacher_tok = self.setup.tokenizer(t)
        inputs = {
            "teacher": sorted(m.folder.name for m in members),
            "type": t,
            "public": content_key([text_of(r) for r in self.corpus.public]),
            "student_tok": align.fingerprint(self.moe_tok),
            "teacher_tok": align.fingerprint(teacher_tok),
            "kd": {
                k: getattr(kd, k)
                for k in ("topk", "temperature", "stages", "queries", "tok_align", "max_len", "batch_size")
            },
            "features": with_features,
        }
        path = TARGETS.path(self.setup.store, inputs, ".pt")

        def compute() -> list:
            teacher = proxy(self.setup.model_config(t), t, [m.upload() for m in members])
            mapping = align.vocab_map(teacher_tok, self.moe_tok, kd.tok_align, store=self.setup.store)
            add_teacher(
                ds,
                self.corpus.public,
                teacher,
                teacher_tok,
                self.moe_tok,
                kd,
                mapping,
                with_features,
                self.device,
            )
            # taken back off: the targets are appended below, the same way whether computed or read
            return [item["targets"].pop() for item in ds.items]

        def load(p: Path) -> list:
            stored = torch.load(p, weights_only=True)
            if len(stored) != len(ds.items):
                raise ValueError("targets of another public set")  # set aside and recomputed
            return stored

        targets = TARGETS.load_or_make(
            path, load, compute, lambda p, made: TARGETS.write(p, lambda tmp: torch.save(made, tmp))
        )
        for item, target in zip(ds.items, targets):
            item["targets"].append(target)


def epochs_to_steps(epochs: float, samples: int, batch: int) -> int:
    return max(1, math.ceil(epochs * samples / batch))


def tune(
    s: Server,
    model: nn.Module,
    steps: int,
    records,
    freeze: bool,
    label: str,
    lr: float,
    out: Fused,
    phase: str = "tune",
    select: bool = True,
    val: list | None = None,
) -> nn.Module:
    """Phase III (experts frozen) or plain training of the MoE on `records` with the router's
    load-balancing loss; `phase` names its plan entry (plan.py: the micro-batch on a GPU). With
    `select` its steps are chosen by the selection protocol (selection.py), the chosen step in
    `out.metrics["<label>_steps"]`; the shared start's pre-training is not a method's choice."""
    if freeze:
        moe.freeze_experts(model)
    model.config.output_router_logits = True
    model.config.router_aux_loss_coef = s.conf.tune.aux_loss
    ds = KDDataset(records, s.moe_tok, s.conf.data.max_len)
    for item in ds.items:
        item["targets"].append(None)
    conf = replace(s.kd, kd="none", alpha=0.0, beta=0.0, lr=lr, steps=steps)
    module = Distiller(model, conf)
    micro, accum = s.setup.batching(phase, conf.batch_size)
    chosen = s.fit(
        module,
        kd_loader(ds, micro, derive_seed("tune", label, s.seed) % 2**62),
        steps,
        accum,
        select=model if select else None,
        val=val,
    )
    if select:
        out.metrics[f"{phase}_steps"] = float(chosen)
    out.curves += [
        {"method": label, "curve": "tuning loss", "step": i, "value": h["ce"]}
        for i, h in enumerate(module.history)
    ]
    model.config.output_router_logits = False
    return model


@dataclass
class Method:
    """A server-side method, instantiated from its config option (conf/deepfusion/method/<name>.yaml,
    `_target_` naming its class): it turns the trained devices into the global MoE. A new method is
    one YAML and one subclass implementing `__call__`."""

    name: str = "method"
    needs_devices: bool = (
        True  # False: the method never sees the devices (centralised bound, server-only floor)
    )
    traffic: str = (
        "uploads"  # uploads (models + embeddings) | models (no embedding) | fedjets | logits | none
    )
    steps: int | None = (
        None  # learning baselines: server optimizer steps; None = DeepFusion's (Server.budget)
    )
    scores_moe: bool = True  # its test scoring and judge run a global MoE (the unigram prior's do not)

    def __call__(self, s: Server) -> Fused:
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")

    def phases(self, shape: Shape) -> list[Phase]:
        """The server-side training phases this method runs (plan.py plans their memory; the
        devices' phase is added there for every method that trains devices)."""
        return []

    def forwards(self, shape: Shape) -> list[Forward]:
        """Forward-only work of its own (teacher targets) beside what every cell runs (step
        selection, test scoring, the judge: plan.forward_work)."""
        return []


@dataclass
class Reference(Method):
    """A reference row (start.py, prior.py): it sees no device and moves nothing."""

    needs_devices: bool = False
    traffic: str = "none"


def build(node) -> Method:
    """Instantiate the configured method (`deepfusion.method` holds its `_target_`)."""
    from hydra.utils import instantiate

    method = instantiate(node) if not isinstance(node, Method) else node
    if not isinstance(method, Method):
        raise TypeError(
            f"deepfusion.method builds a {type(method).__name__}, not a server.methods.base.Method"
        )
    return method
