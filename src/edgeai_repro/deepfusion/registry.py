"""DeepFusion's tasks, registered without importing their code (see core/tasks.py)."""

from edgeai_repro.core.tasks import Task, register
from edgeai_repro.deepfusion import config  # noqa: F401  (its schema must be in Hydra's ConfigStore before composing)

# Settings the paper-scale presets set and whose tiny values do what the code did before they existed.
# device.batched, at any value: whether devices train grouped changes no result beyond float
# summation order (devices/batched.py), so it is never part of a cell's identity.
NEUTRAL = (
    ("precision", "fp32"),
    ("attention", "eager"),
    ("memory.optimizer", "adamw"),
    ("kd.warmup", 0.0),
    ("device.full_lr", None),
    ("select.patience", 0),  # the whole cap: what the selection did before patience existed
    *(("device.batched", v) for v in (None, True, False)),
)
_TRAINED = ("deepfusion/devices", "deepfusion/tokenizers")
for _name, _validate, _method, _reads in (
    ("comm", "validate_common", None, ()),
    ("memory", "validate_memory", None, ()),
    ("phase1", "validate_pipeline", None, _TRAINED),
    (
        "fusion",
        "validate_fusion",
        "deepfusion.method.name",
        (*_TRAINED, "deepfusion/inits", "deepfusion/targets", "deepfusion/vocab_maps"),
    ),
):
    register(
        Task(
            name=f"deepfusion_{_name}",
            paper="deepfusion",
            section="deepfusion",
            run_target=f"edgeai_repro.deepfusion.tasks:run_{_name}",
            # a training cell's launch is checked too (plan.py: host RAM of the cells a GPU launch runs at once)
            validate_target=f"edgeai_repro.deepfusion.{'planning.plan' if _name in ('phase1', 'fusion') else 'config'}:{_validate}",
            method_key=_method,
            reads=_reads,
            neutral=NEUTRAL,
            files_target="edgeai_repro.deepfusion.config:local_files"
            if _name in ("phase1", "fusion")
            else None,
            plan_target="edgeai_repro.deepfusion.planning.plan:plan_cells"
            if _name in ("phase1", "fusion")
            else None,
        )
    )
