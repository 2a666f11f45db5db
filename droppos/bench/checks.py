"""What a launch must satisfy before anything starts or is submitted: each engine's batch rules.

A task whose batch is global (the registry's ``batch_scope``: detectron2's
``dataloader.train.total_batch_size``) is split evenly over the run's processes; a number of
processes that does not divide it stops detectron2 at its first iteration, on the cluster, hours
after submission. :func:`batch_problems` finds these here, one line per run.
"""

from __future__ import annotations

from .plan import PlannedRun


def _override(args: list[str], key: str) -> str | None:
    for a in args:
        k, sep, v = a.partition("=")
        if sep and k == key:
            return v
    return None


def _config_default(run: PlannedRun, key: str) -> int | None:
    """The value of ``key`` in the run's detection config (None when detectron2 or the config cannot be read)."""
    try:
        from detectron2.config import LazyConfig

        from droppos.transfer.detection.config import resolve_config_file

        cfg = LazyConfig.load(str(resolve_config_file(run.args[run.args.index("--config-file") + 1])))
        node = cfg
        for part in key.split("."):
            node = node[part]
        return int(node)
    except Exception:  # noqa: BLE001 - not checkable here: the engine checks it when it starts
        return None


def batch_problems(runs: list[PlannedRun], processes: int) -> list[str]:
    """One line per run whose global batch ``processes`` does not divide."""
    problems = []
    if processes <= 1:
        return problems
    for run in runs:
        entry = run.entry
        if run.kind == "data" or entry.batch_scope != "global" or entry.single_process:
            continue
        value = _override(run.args, entry.batch_option)
        batch = int(value) if value is not None else _config_default(run, entry.batch_option)
        if batch is not None and batch % processes:
            fit = max(processes, batch - batch % processes)
            problems.append(f"{run.id}: {entry.batch_option}={batch} does not divide over {processes} processes "
                            f"(detectron2 splits it evenly); set it to a multiple of {processes} in the spec's options "
                            f"(e.g. {fit}), or launch another number of processes")
    return problems
