"""The run contract every engine and the bench use: run folders, their records, and the kinds of runs.

* :mod:`.folder`: a run folder is claimed, locked and validated once per run by the launching process
  or global rank 0 (:func:`open_run`); the other processes and machines join it and never claim; a
  failed claim ends every process within seconds with the same one line.
* :mod:`.records`: the typed records a run folder holds (``metrics.json``, ``init.json``,
  ``run.json``), each written atomically.
* :mod:`.tasks`: the registry of run kinds (command, launcher, resume flag, schedule and batch keys).

Processes, devices and collectives are :mod:`droppos.utils.dist`'s.
"""

from .folder import JoinError, claim, lock, open_run, release, removed_on_failure, run_kind, together, unlock
from .records import InitRecord, MetricsRecord, RunRecord, read_metrics, write_metrics
from .tasks import TASKS, TaskKind, task_kind

__all__ = ["JoinError", "claim", "lock", "open_run", "release", "removed_on_failure", "run_kind", "together", "unlock", "InitRecord", "MetricsRecord",
           "RunRecord", "read_metrics", "write_metrics", "TASKS", "TaskKind", "task_kind"]
