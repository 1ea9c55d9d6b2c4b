"""One DeepFusion cell's resolved setup, built once by its task and passed down.

A task reads its raw config once (`Setup.of`): the typed settings, where the cell store and the
local checkpoints are, the accelerator, the model families (built once, not per lookup), each
device's model type (assigned once) and, on first use, the corpus, each family's config and
tokenizer. Everything below the task takes this object or the typed settings it holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from edgeai_repro.core.gpus import current, is_gpu
from edgeai_repro.deepfusion.config import DeepFusionConf, KDConf, Mode, families, family, settings
from edgeai_repro.deepfusion.devices.assignment import assign_models
from edgeai_repro.deepfusion.models.families import Arch

log = logging.getLogger(__name__)


@dataclass
class Setup:
    conf: DeepFusionConf
    seed: int
    store: Path  # the cell store's root (paths.cache): every cache lives under it
    folders: dict[
        str, str
    ]  # local checkpoint folders by model name (paths.checkpoints; not part of a cell's identity)
    accelerator: str = "cpu"  # the cell's trainer accelerator (cpu | gpu)
    families: dict[str, Arch] = field(default_factory=dict)
    gpu_memory_gb: float | None = (
        None  # what plan.py plans for: the GPU's (or trainer.gpu_memory_gb); None on a CPU
    )
    planner: Any = None  # plan.planner(setup, method) on a GPU: phase key, batch -> (micro, accumulation)
    _tokenizers: dict[str, Any] = field(default_factory=dict, repr=False)
    _configs: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, cfg: DictConfig) -> Setup:
        """The only place a DeepFusion cell reads its raw config."""
        conf = settings(cfg)
        return cls(
            conf,
            int(cfg.seed),
            Path(cfg.paths.cache),
            dict(cfg.paths.get("checkpoints") or {}),
            str(cfg.trainer.accelerator),
            families(conf),
            gpu_memory_gb=gpu_memory_gb(cfg),
        )

    @property
    def case(self):
        return self.conf.this_case

    @cached_property
    def types(self) -> list[str]:
        """Each device's model type (devices/assignment.py), drawn once per cell."""
        c = self.conf
        return assign_models(c.devices, list(self.case.device_models), self.seed, c.assignment)

    def family(self, name: str, key: str = "model") -> Arch:
        return family(self.conf, self.families, name, key)

    def model_config(self, name: str):
        """The transformers config of model `name` as this cell loads it (the local checkpoint's own
        at paper scale, else the published or tiny values), built once."""
        if name not in self._configs:
            from edgeai_repro.deepfusion.models.catalog import kernel_for
            from edgeai_repro.deepfusion.models.checkpoints import model_config

            config = model_config(self.family(name), self.conf.models, self.folders.get(name))
            # deepfusion.attention, whatever the config came from (a hub or local config.json names
            # none, the packaged one eager): the models built from it run the kernel the plan assumes.
            config._attn_implementation = kernel_for(type(config), str(self.conf.attention))
            self._configs[name] = config
        return self._configs[name]

    @cached_property
    def corpus(self):
        """Device pool, test set and public data (data/corpus.py), loaded once."""
        from edgeai_repro.deepfusion.data.corpus import load_corpus

        return load_corpus(self.conf, self.seed)

    @cached_property
    def moe_config(self):
        """The global MoE's config: K = the domains of every device type (cluster.k_of) routed
        experts, kept sparse (models.moe.global_config)."""
        from edgeai_repro.deepfusion.models.moe import global_config

        k_total = sum(self.conf.cluster.k_of(t) for t in dict.fromkeys(self.types))
        return global_config(self.model_config(self.case.moe), k_total)

    def tokenizer(self, name: str):
        """Model `name`'s tokenizer: the checkpoint's own at paper scale (its local folder, else the
        hub), one trained on the run's text at tiny scale (cached under the store)."""
        if name not in self._tokenizers:
            from edgeai_repro.deepfusion.data import tokenizers
            from edgeai_repro.deepfusion.data.records import text_of

            arch = self.family(name)
            if self.conf.models == "paper":
                tok = tokenizers.hub_tokenizer(self.folders.get(name) or arch.hub_id)
            else:
                texts = [text_of(r) for r in self.corpus.train + self.corpus.public]
                tok = tokenizers.tiny_tokenizer(
                    arch.tokenizer_family, texts, int(arch.tiny["vocab_size"]), self.store
                )
            self._tokenizers[name] = tok
        return self._tokenizers[name]

    def training_mode(self, model_type: str) -> Mode:
        """The mode a device of this type trains in: its configured one. A QLoRA that cannot run
        here is refused at validation (config.validate_pipeline), never trained as LoRA under its
        label."""
        return self.conf.device_mode(model_type)

    def inputs(self, reads_data: bool) -> str:
        """What a result was computed from, for the report (whether the paper's numbers go beside it):
        `paper` when the models (and, for a task that reads data, the datasets) are the paper's."""
        models = "paper" if self.conf.models == "paper" else f"{self.conf.models} models"
        if not reads_data:
            return models
        data = "paper" if self.conf.data.source == "hub" else f"{self.conf.data.source} data"
        return (
            "paper"
            if models == data == "paper"
            else ", ".join(x for x in (models, data) if x != "paper") or "paper"
        )

    def batching(self, key: str, batch: int) -> tuple[int, int]:
        """(micro-batch, gradient accumulation) of the training phase `key`: the run plan's for the
        cell's GPU (plan.planner, set by the task when the cell has a GPU to plan for); the batch
        itself otherwise."""
        return self.planner(key, batch) if self.planner is not None else (batch, 1)

    @property
    def train_dtype(self):
        """The dtype of every trainable copy a method makes (`deepfusion.precision`)."""
        from edgeai_repro.deepfusion.accounting.comm import dtype_of

        return dtype_of(self.conf.precision, "deepfusion.precision")

    @property
    def kd(self) -> KDConf:
        """Phase II's settings with the cell's sequence length."""
        return replace(self.conf.kd, max_len=self.conf.data.max_len)

    @property
    def device(self) -> str:
        """Where forward-only passes run (teacher targets, scoring): the cell's accelerator."""
        import torch

        if is_gpu(self.accelerator) and torch.cuda.is_available():
            return f"cuda:{current()}"  # the GPU this cell's process claimed (its trainer's)
        return "cpu"


def gpu_memory_gb(cfg: DictConfig) -> float | None:
    """The GPU memory a cell plans for: `trainer.gpu_memory_gb` when set (planning on a CPU for a GPU
    elsewhere), else the cell's own GPU's; None when the cell runs on a CPU."""
    if not is_gpu(cfg.trainer.accelerator):
        return None
    stated = cfg.trainer.get("gpu_memory_gb")
    if stated:
        return float(stated)
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(current()).total_memory / 1e9
