"""The incentive mechanism's task, registered without importing its code (see core/tasks.py)."""

from edgeai_repro.core.tasks import Task, register
from edgeai_repro.incentive import config  # noqa: F401  (its schema must be in Hydra's ConfigStore before composing)

# Options whose defaults do what the code did before they existed (issue 38's couplings, docs/incentive.md):
# at those values they are not part of a cell's identity, so the committed cells stay found.
NEUTRAL = (
    ("asosa.feedback", "unit_cost"),
    ("asosa.max_step", None),
    ("asosa.freeze_stage1", False),
    ("asosa.warm_replay", False),
    ("env.cost_scale", "per_lmo"),
)

register(
    Task(
        name="incentive_asosa",
        paper="incentive",
        section="incentive",
        run_target="edgeai_repro.incentive.tasks:run_incentive",
        validate_target="edgeai_repro.incentive.config:validate",
        method_key="incentive.method.name",
        reads=("incentive/references",),
        neutral=NEUTRAL,
    )
)
