"""DeepFusion's tasks, registered without importing their code (see core/tasks.py)."""

from edgeai_repro.core.tasks import Task, register
from edgeai_repro.deepfusion import config  # noqa: F401  (its schema must be in Hydra's ConfigStore before composing)

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
            validate_target=f"edgeai_repro.deepfusion.config:{_validate}",
            method_key=_method,
            reads=_reads,
        )
    )
