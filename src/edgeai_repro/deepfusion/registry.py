"""DeepFusion's tasks, registered without importing their code (see core/tasks.py)."""
from edgeai_repro.core.tasks import Task, register
from edgeai_repro.deepfusion import config  # noqa: F401  (its schema must be in Hydra's ConfigStore before composing)

# version 3 of memory: the training step simulated on the meta device; the loss path, gradient checkpointing, per-family attention and k-bit upcasts;
# version 2 of fusion: fair baselines (FedJETS rounds, FedMKT's budget and traffic, OFA-KD's projector);
# version 3: each domain's student and VAA seeded apart (results independent of the teacher-targets cache).
for _name, _validate, _method, _version in (("comm", "validate_common", None, 1), ("memory", "validate_memory", None, 3),
                                            ("phase1", "validate_pipeline", None, 1),
                                            ("fusion", "validate_fusion", "deepfusion.method.name", 3)):
    register(Task(name=f"deepfusion_{_name}", paper="deepfusion", section="deepfusion",
                  run_target=f"edgeai_repro.deepfusion.tasks:run_{_name}",
                  validate_target=f"edgeai_repro.deepfusion.config:{_validate}", method_key=_method, version=_version))
