"""The model families DeepFusion uses, as config groups: `conf/deepfusion/student/<name>.yaml`
(on-device models) and `conf/deepfusion/teacher/<name>.yaml` (global MoEs), each instantiated into
an `Arch` (its transformers config class, real checkpoint, published config.json values and the
shrunken tiny-scale config). Data only (no torch, no transformers), so validating a config never
loads the model stack; catalog.py builds models from these. A cell builds its families once
(config.families, held by setup.Setup).

Adding a model family is one YAML in either folder (plus its name in a case's `device_models` or
`moe`): the transformers class is named by `config_class`, so no Python changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from edgeai_repro.core.errors import ConfigError

GROUPS = ("student", "teacher")


@dataclass(frozen=True)
class Arch:
    """One architecture: its transformers config class, the real checkpoint and its config values."""

    name: str
    config_class: str  # transformers config class
    hub_id: str  # the checkpoint at paper scale
    paper: dict[str, Any]  # published config.json values (what the hub would return)
    tokenizer_family: str  # models of one family share a tokenizer (GPT-2 and GPT-2 Medium do)
    moe: bool = False
    tiny: dict[str, Any] = field(default_factory=dict)  # overrides of `paper` at scale=tiny

    def config(self, overrides: dict[str, Any] | None = None):
        import transformers

        cls = getattr(transformers, self.config_class)
        return cls(**{**self.paper, **(overrides or {})})


def build(node: DictConfig | dict, key: str) -> Arch:
    """The Arch a family's config node describes, or one sentence naming `key`."""
    from hydra.utils import instantiate

    try:
        arch = instantiate(node, _convert_="all")
    except Exception as exc:
        raise ConfigError(
            f"{key} cannot be built ({exc}); see conf/deepfusion/student/gpt2.yaml for the fields."
        ) from None
    if not isinstance(arch, Arch):
        raise ConfigError(f"{key}._target_ must be edgeai_repro.deepfusion.models.families.Arch.")
    return arch


def packaged(name: str) -> Arch:
    """A model family as the project ships it (its YAML in conf/), for tests and benchmarks without a
    composed config."""
    from edgeai_repro.core.paths import conf_dir

    for group in GROUPS:
        path = conf_dir() / "deepfusion" / group / f"{name}.yaml"
        if path.exists():
            return build(OmegaConf.load(path)[name], f"deepfusion.{group}.{name}")
    raise ConfigError(f"model={name!r} is not a known model type; add conf/deepfusion/student/{name}.yaml.")
