"""The single launcher: `edgeai-repro experiment=<paper>/<name> [scale=...] [key=value ...]`.

Every table or figure is an experiment config that turns this into a Hydra multirun; each job
runs one cell through the runner, and the report callback gathers the cells at the end.
"""

from __future__ import annotations

import importlib
import sys

import hydra
from omegaconf import DictConfig

from edgeai_repro.core.paths import conf_dir

# Each paper's registry is light: a task's code (and its heavy dependencies) loads when a cell computes.
PAPER_PACKAGES = (
    "edgeai_repro.aeria.registry",
    "edgeai_repro.incentive.registry",
    "edgeai_repro.deepfusion.registry",
)


def load_papers() -> None:
    from omegaconf import OmegaConf

    import hydra_plugins.edgeai_repro_sweeper.caching_sweeper  # noqa: F401  (hydra/sweeper=caching)

    # ${repo:paper_results} points into the checkout whatever the working directory is.
    OmegaConf.register_new_resolver("repo", lambda rel: str(conf_dir().parent / rel), replace=True)
    # ${cells_at_once:<accelerator>,<cells per GPU>}: the joblib launcher's n_jobs (core/gpus.py).
    OmegaConf.register_new_resolver("cells_at_once", _cells_at_once, replace=True)

    for module in PAPER_PACKAGES:
        importlib.import_module(module)


def compose_config(overrides: list[str]) -> DictConfig:
    """A cell's config composed as the launcher composes it, for scripts (bench, GPU check)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    load_papers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides)


def _cells_at_once(accelerator: str, cells_per_gpu: int = 1) -> int:
    from edgeai_repro.core.gpus import cells_at_once

    return cells_at_once(accelerator, cells_per_gpu)


def _app(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from edgeai_repro.core.errors import ConfigError
    from edgeai_repro.core.runner import run_cell

    load_papers()  # again: launchers may run this job in a fresh worker process
    seeds = cfg.get("cell_seeds")
    if seeds:  # a group of cells that differ only by their seed (caching sweeper): composed once
        from pathlib import Path

        from omegaconf import open_dict

        root = Path(HydraConfig.get().runtime.output_dir)
        outcomes = []
        with open_dict(cfg):
            cfg.cell_seeds = None
            for seed in list(seeds):
                cfg.seed = int(seed)
                try:
                    outcomes.append(run_cell(cfg, run_dir=root / f"seed{seed}"))
                except ConfigError as exc:
                    raise SystemExit(f"error: {exc}") from None
        return outcomes
    try:
        outcome = run_cell(cfg)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    if outcome["status"] == "failed" and HydraConfig.get().mode == RunMode.RUN:
        raise SystemExit(f"error: the cell failed ({outcome['error']}); details in {outcome['run_dir']}")
    return outcome


def main() -> None:
    from edgeai_repro.help import experiment_list, help_text

    args = sys.argv[1:]
    if any(a in {"--help", "-h"} for a in args):
        print(help_text(conf_dir()))
        return
    if not any(a.split("=", 1)[0] in {"experiment", "+experiment", "task"} for a in args) and not any(
        a.startswith("-") for a in args
    ):
        print(
            "edgeai-repro: name an experiment, e.g. `edgeai-repro experiment=aeria/revenue_vs_users`; they are:\n"
            + experiment_list(conf_dir())
            + "\n(`edgeai-repro --help` says more.)"
        )
        sys.exit(2)
    load_papers()
    _one_sentence_composition_errors()
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_app)()


def _one_sentence_composition_errors() -> None:
    """A value Hydra refuses while composing (an option outside its set) is reported as one
    sentence naming the key and the options, like every other bad input, instead of Hydra's
    multi-line report. Everything else goes through Hydra's own reporting unchanged."""
    import hydra._internal.utils as hydra_utils

    from edgeai_repro.core.errors import composition_message

    report = hydra_utils.run_and_report

    def run_and_report(func):
        def guarded():
            try:
                return func()
            except Exception as exc:
                message = composition_message(exc)
                if message is None:
                    raise
                raise SystemExit(f"error: {message}") from None

        return report(guarded)

    hydra_utils.run_and_report = run_and_report


if __name__ == "__main__":
    main()
