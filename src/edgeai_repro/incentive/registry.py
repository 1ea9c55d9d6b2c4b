"""The incentive mechanism's task, registered without importing its code (see core/tasks.py)."""
from edgeai_repro.core.tasks import Task, register
from edgeai_repro.incentive import config  # noqa: F401  (its schema must be in Hydra's ConfigStore before composing)

register(Task(name="incentive_asosa", paper="incentive", section="incentive",
              run_target="edgeai_repro.incentive.tasks:run_incentive",
              validate_target="edgeai_repro.incentive.config:validate", method_key="incentive.method.name",
              # 2: the Nash and welfare references are computed on the evaluation episodes' own workers;
              # 3: iterated best response also stops when a sweep gains < tol/100 (a payoff-flat direction
              # kept it running to nash_iters), and MADDPG logs its losses once per logging interval
              version=3))
