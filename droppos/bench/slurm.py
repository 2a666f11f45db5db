"""Submit a plan to SLURM through submitit: one job per run, multi-GPU with torchrun inside.

Each job runs :class:`SlurmRun` once per node (``tasks_per_node=1``); it starts the run's
command with the job's processes, as the task registry says (:func:`.commands.launch_command`):
``torchrun --nnodes N --nproc-per-node G --node-rank R --master-addr <first node> --master-port P``
for pretrain / classify / segment (segment with ``--launcher pytorch``), detectron2's
``--num-gpus G --num-machines N --machine-rank R --dist-url tcp://<first node>:P`` for detect,
one process on node 0 for probes. The port P is derived from the job id
(:func:`droppos.utils.dist.job_port`), so two jobs sharing a first node do not collide. Downstream
jobs wait for the jobs they need (``--dependency=afterok:ID`` with ``--kill-on-invalid-dep=yes``,
so a failed pretraining cancels them). Dataset builds run here first, before anything is submitted.
A job that hits its time limit or is pre-empted is requeued by submitit and resumes (every command
has its resume flag).

Submitting again is idempotent: a run whose ``run.json`` names a job that is still queued or
running (its state read through submitit: ``sacct`` on SLURM, the job's process with the local
executor) is not submitted again, and the jobs that need it wait for that job; a run whose job is
gone without finishing (failed, cancelled, timed out, lost) is submitted again, and the bench says
so. Finished runs are skipped.

``cluster="local"`` (``--slurm-cluster local``) runs the same jobs as local processes through
submitit, to try the submission path without SLURM; there a job is submitted after the jobs it
needs have ended.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from droppos.errors import UserError

from .commands import Launch, launch_command
from .plan import PlannedRun
from .state import finished, now, outcome_error, read_run_json, write_run_json

#: SLURM job states of a job that will still run (sacct's words; submitit's local jobs say RUNNING)
LIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
               "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "READY")


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("droppos bench --slurm needs submitit, which is not installed: "
                         "pip install 'droppos-bench[cluster]' (or pip install submitit)") from None
    return submitit


@dataclass
class SlurmOptions:
    nodes: int = 1
    gpus_per_node: int = 1
    partition: str | None = None
    timeout_min: int = 4320
    cpus_per_task: int = 8
    extra: dict = field(default_factory=dict)  # more #SBATCH options: {"account": "x", "qos": "y"}
    cluster: str = "slurm"  # slurm | local | debug (submitit's)


def job_folder(out: Path, run: PlannedRun) -> Path:
    return out / "slurm" / run.id.replace("/", "-")


@dataclass
class SlurmRun:
    """The body of one job (pickled by submitit): run the command on this node, record the outcome."""

    run: PlannedRun
    record: dict | None
    gpus_per_node: int
    python: str = sys.executable

    def __call__(self) -> str:
        from droppos.utils.dist import job_port

        submitit = import_submitit()
        env = submitit.JobEnvironment()
        if env.node != 0 and self.run.entry.single_process:
            return "node 0 runs it"
        launch = Launch(gpus=max(1, self.gpus_per_node), nodes=env.num_nodes, node_rank=env.node,
                        master_addr=env.hostnames[0] if env.hostnames else "127.0.0.1",
                        master_port=job_port(str(env.job_id)))
        cmd = launch_command(self.run.kind, self.run.args, launch, self.python)
        main = env.node == 0
        log_path = self.run.log if main else self.run.log.with_name(f"bench.node{env.node}.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if main:
            attempts = int((read_run_json(self.run.folder) or {}).get("attempts") or 0) + 1
            write_run_json(self.run, self.record, status="running", attempts=attempts, started=now(), ended=None,
                           returncode=None, error=None, job_id=str(env.job_id))
        with open(log_path, "ab") as log:
            log.write(f"\n===== droppos bench {self.run.id}: job {env.job_id} node {env.node}, {now()}\n"
                      f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            offset = log.tell()
            # the command is not one of this job's srun tasks: its own launcher (torchrun, detectron2) or one
            # process, never SLURM's task variables (droppos.utils.dist reads SLURM_TASK_PID to tell)
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if not main:
            if rc != 0:
                raise RuntimeError(f"{self.run.id}: node {env.node} exited with {rc}; log {log_path}")
            return "finished"
        error = outcome_error(self.run, rc, offset)
        write_run_json(self.run, self.record, status="failed" if error else "finished", ended=now(), returncode=rc,
                       error=error)
        if error:
            raise RuntimeError(f"{self.run.id}: {error}")
        return "finished"

    def checkpoint(self):
        """Requeue on time-out or pre-emption; the command's resume flag continues the run."""
        submitit = import_submitit()
        return submitit.helpers.DelayedSubmission(self)


def job_state(out: Path, run: PlannedRun, job_id: str, cluster: str) -> str:
    """The state of a job submitted earlier, read through submitit: sacct's word on SLURM (PENDING,
    RUNNING, COMPLETED, FAILED, ...); with the local executor, RUNNING while its process lives, else
    FINISHED (a result was written) or GONE."""
    submitit = import_submitit()
    if cluster == "slurm":
        try:
            return str(submitit.SlurmJob(folder=job_folder(out, run), job_id=job_id).state).split()[0].upper()
        except Exception:  # noqa: BLE001 - sacct unreachable: the state is unknown, so the job is not trusted
            return "UNKNOWN"
    job = submitit.local.local.LocalJob(folder=job_folder(out, run), job_id=job_id)
    if _pid_alive(job_id):
        return "RUNNING"
    return "FINISHED" if job.paths.result_pickle.exists() else "GONE"


def _pid_alive(job_id: str) -> bool:
    try:
        pid = int(job_id)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    try:  # a finished child of this process stays as a zombie until reaped: not alive
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def wait_live(out: Path, run: PlannedRun, job_id: str, cluster: str) -> None:
    """Wait for a job submitted by an earlier bench (submitit's watcher on SLURM, its process locally)."""
    import time

    if cluster == "slurm":
        import_submitit().SlurmJob(folder=job_folder(out, run), job_id=job_id).wait()
        return
    while _pid_alive(job_id):
        time.sleep(0.5)


def submit(runs: list[PlannedRun], records: dict[str, dict], out: Path, opts: SlurmOptions, wait: bool = False,
           echo: Callable[[str], None] = print) -> int:
    """Submit every unfinished run that has no live job (data built here first); returns the number that failed
    or were blocked."""
    from .local import LocalExecutor, summarize

    submitit = import_submitit()
    data = [r for r in runs if r.kind == "data"]
    outcomes = LocalExecutor(records, echo=echo).execute(data) if data else {}
    failed = {rid for rid, o in outcomes.items() if o.state != "done" and o.state != "finished"}
    jobs: dict[str, object] = {}  # submitted now
    live: dict[str, str] = {}  # run id -> job id of an earlier submission still queued or running
    blocked = []
    for run in runs:
        if run.kind == "data":
            continue
        if finished(run):
            echo(f"  {run.id}: done, not submitted")
            continue
        previous = read_run_json(run.folder) or {}
        old_job = previous.get("job_id")
        if old_job and previous.get("status") in ("submitted", "running"):
            state = job_state(out, run, str(old_job), opts.cluster)
            if state in LIVE_STATES:
                live[run.id] = str(old_job)
                echo(f"  {run.id}: job {old_job} is {state}, not submitted again")
                continue
            echo(f"  {run.id}: job {old_job} ended {state} without finishing the run: submitting it again")
        bad = [d for d in run.deps if d in failed]
        if bad:
            failed.add(run.id)
            blocked.append(run.id)
            write_run_json(run, records.get(run.backbone), status="blocked", ended=now(),
                           error=f"needs {', '.join(bad)}, which did not finish")
            echo(f"  {run.id}: BLOCKED (needs {', '.join(bad)})")
            continue
        after_ids = [jobs[d].job_id if d in jobs else live[d] for d in run.deps if d in jobs or d in live]
        executor = submitit.AutoExecutor(folder=str(job_folder(out, run)), cluster=opts.cluster)
        params = dict(name=f"droppos:{run.id}", timeout_min=opts.timeout_min, nodes=opts.nodes, tasks_per_node=1,
                      cpus_per_task=opts.cpus_per_task)
        if opts.gpus_per_node > 0:
            params["gpus_per_node"] = opts.gpus_per_node
        if executor.cluster == "slurm":
            extra = dict(opts.extra)
            if after_ids:
                extra["dependency"] = "afterok:" + ":".join(after_ids)
                extra["kill-on-invalid-dep"] = "yes"
            if opts.partition:
                params["slurm_partition"] = opts.partition
            if extra:
                params["slurm_additional_parameters"] = extra
        else:
            params = {k: v for k, v in params.items() if k in ("timeout_min", "gpus_per_node", "tasks_per_node", "name")}
            for d in run.deps:  # no scheduler: wait for what this run needs
                if d in jobs:
                    jobs[d].wait()
                elif d in live:
                    wait_live(out, _run(runs, d), live[d], opts.cluster)
            bad = [d for d in run.deps if (d in jobs or d in live) and not finished(_run(runs, d))]
            if bad:
                failed.add(run.id)
                blocked.append(run.id)
                write_run_json(run, records.get(run.backbone), status="blocked", ended=now(),
                               error=f"needs {', '.join(bad)}, which did not finish")
                echo(f"  {run.id}: BLOCKED (needs {', '.join(bad)})")
                continue
        executor.update_parameters(**params)
        try:
            job = executor.submit(SlurmRun(run, records.get(run.backbone), opts.gpus_per_node))
        except Exception as e:  # noqa: BLE001 - sbatch missing or refusing: stop, say which run and why
            hint = " (no sbatch here: is this a SLURM login node?)" if isinstance(e, FileNotFoundError) else ""
            raise UserError(f"droppos bench: submitting {run.id} failed: {e}{hint}; "
                             f"{len(jobs)} job(s) were submitted before it") from None
        jobs[run.id] = job
        write_run_json(run, records.get(run.backbone), status="submitted", job_id=str(job.job_id), submitted=now())
        echo(f"  {run.id}: job {job.job_id}" + (f" (after {', '.join(after_ids)})" if after_ids else ""))
    if not wait:
        echo(f"submitted {len(jobs)} job(s)" + (f", {len(live)} already queued or running" if live else "") +
             f"; when they end, run the same command again (finished runs are skipped) "
             f"or `droppos results {out} --out {out / 'results'}`")
        return len(blocked)
    from .local import Outcome

    for rid, job in jobs.items():
        ok = _job_ok(job)
        outcomes[rid] = Outcome("finished" if ok else "failed", error="" if ok else _job_error(job))
    for rid, job_id in live.items():
        wait_live(out, _run(runs, rid), job_id, opts.cluster)
        done = finished(_run(runs, rid))
        outcomes[rid] = Outcome("finished" if done else "failed", error="" if done else f"job {job_id} did not finish")
    for rid in blocked:
        outcomes[rid] = Outcome("blocked")
    for run in runs:
        outcomes.setdefault(run.id, Outcome("done"))
    return summarize(runs, outcomes, echo)


def _run(runs: list[PlannedRun], run_id: str) -> PlannedRun:
    return next(r for r in runs if r.id == run_id)


def _job_ok(job) -> bool:
    try:
        job.result()
        return True
    except Exception:  # noqa: BLE001 - any failure of the job counts as a failed run
        return False


def _job_error(job) -> str:
    try:
        exc = job.exception()
    except Exception as e:  # noqa: BLE001
        exc = e
    return str(exc).split("\n", 1)[0] if exc else "failed"
