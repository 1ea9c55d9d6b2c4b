"""The incentive mechanism's task, registered without importing its code (see core/tasks.py)."""

from edgeai_repro.core.tasks import Task, register
from edgeai_repro.incentive import config  # noqa: F401  (its schema must be in Hydra's ConfigStore before composing)

register(
    Task(
        name="incentive_asosa",
        paper="incentive",
        section="incentive",
        run_target="edgeai_repro.incentive.tasks:run_incentive",
        validate_target="edgeai_repro.incentive.config:validate",
        method_key="incentive.method.name",
        reads=("incentive/references",),
    )
)
