"""AERIA's tasks, registered without importing their code (see core/tasks.py)."""

from edgeai_repro.aeria import config  # noqa: F401  (its schema must be in Hydra's ConfigStore before composing)
from edgeai_repro.core.tasks import Task, register

for _name in ("revenue", "properties", "runtime", "worst_case", "frontier"):
    register(
        Task(
            name=f"aeria_{_name}",
            paper="aeria",
            section="aeria",
            run_target=f"edgeai_repro.aeria.tasks:run_{_name}",
            validate_target="edgeai_repro.aeria.config:validate",
        )
    )
