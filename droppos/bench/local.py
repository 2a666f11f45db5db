"""Run a plan on this machine: one run at a time, or ``jobs`` at once.

Each run is a subprocess of the real command line (``python -m droppos.cli ...``), its output
appended to the run's ``bench.log``. A finished run is skipped; any other is (re)started with its
engine's resume flag, so an interrupted run continues where it stopped. A failed run is recorded
(``run.json`` status ``failed`` with the end of its log) and the others go on; the runs that
need it are marked ``blocked``. Ctrl-C stops the running processes and marks them
``interrupted`` (SIGTERM too); running the same command again resumes. On Linux a run also gets
SIGTERM when the bench itself dies (``kill -9``, a lost session), so that a restarted bench never
finds the previous one's orphan still writing into the run folder.

With ``jobs > 1`` each run's processes get ``OMP_NUM_THREADS = cores // (jobs x processes)`` (unless
set) and, on a machine with GPUs, each run its own ``launch.gpus`` GPUs through
``CUDA_VISIBLE_DEVICES`` (job slot k: GPUs k x gpus ... k x gpus + gpus - 1), matching the
``--nproc-per-node`` it is started with; asking for more GPUs than are visible is one line before
anything starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from droppos.errors import UserError

from .commands import Launch, launch_command
from .plan import PlannedRun
from .state import changed_since, finished, now, outcome_error, status, write_run_json

FAILED = ("failed", "blocked", "interrupted")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """``preexec_fn``: ask Linux to SIGTERM this child when the process that started it dies."""
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Outcome:
    """What happened to one run in this invocation."""

    state: str  # done (already finished) | finished | failed | blocked | interrupted
    seconds: float = 0.0
    error: str = ""


@dataclass
class _Running:
    run: PlannedRun
    proc: subprocess.Popen
    log: object
    offset: int
    started: float
    slot: int
    attempts: int


def _fmt_time(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.1f}s"


@dataclass
class LocalExecutor:
    """Runs ``runs`` (a plan, in dependency order) and returns an :class:`Outcome` per run id."""

    records: dict[str, dict]  # spec backbone name -> backbone record for run.json
    jobs: int = 1
    launch: Launch = field(default_factory=Launch)
    python: str = sys.executable
    echo: Callable[[str], None] = print
    poll: float = 0.2

    def __post_init__(self):
        if self.jobs < 1:
            raise UserError(f"--jobs must be >= 1, got {self.jobs}")
        self._gpus: int | None = None

    # ------------------------------------------------------------------ environment
    def _gpu_count(self) -> int:
        if self._gpus is None:
            self._gpus = 0
            try:
                import torch

                self._gpus = torch.cuda.device_count()
            except ImportError:
                pass
        return self._gpus

    def check_devices(self) -> None:
        """One line when the runs at once need more GPUs than this machine shows (CPU processes need none)."""
        n = self._gpu_count()
        want = self.jobs * self.launch.gpus
        if n and want > n:
            raise UserError(f"--jobs {self.jobs} x --gpus-per-node {self.launch.gpus} = {want} GPUs, but {n} are "
                            "visible; lower --jobs or --gpus-per-node")

    def _env(self, slot: int) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        procs = self.jobs * self.launch.gpus
        if procs > 1 and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // procs))
        n = self._gpu_count()
        if self.jobs > 1 and n and "CUDA_VISIBLE_DEVICES" not in os.environ:
            first = slot * self.launch.gpus
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(first + i) for i in range(self.launch.gpus))
        return env

    # ------------------------------------------------------------------ one run
    def _start(self, run: PlannedRun, slot: int, index: str) -> _Running:
        cmd = launch_command(run.kind, run.args, self.launch, self.python)
        before = status(run)
        run.log.parent.mkdir(parents=True, exist_ok=True)
        attempts = 1
        if run.kind != "data":
            from .state import read_run_json

            attempts = int((read_run_json(run.folder) or {}).get("attempts") or 0) + 1
        log = open(run.log, "ab")
        offset = log.tell()
        header = f"\n===== droppos bench {run.id}: attempt {attempts}, {now()}\n$ {' '.join(cmd)}\n"
        log.write(header.encode())
        log.flush()
        offset = log.tell()
        if run.kind != "data":
            write_run_json(run, self.records.get(run.backbone), status="running", attempts=attempts, started=now(),
                           ended=None, returncode=None, error=None)
        again = {"partial": " (resuming)", "failed": " (again, after a failure)"}.get(before, "")
        self.echo(f"{index} {run.id}: start{again}; log {run.log}")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env(slot),
                                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        return _Running(run, proc, log, offset, time.monotonic(), slot, attempts)

    def _finish(self, r: _Running, returncode: int) -> Outcome:
        r.log.close()
        seconds = time.monotonic() - r.started
        error = outcome_error(r.run, returncode, r.offset)
        if r.run.kind != "data":
            write_run_json(r.run, self.records.get(r.run.backbone), status="failed" if error else "finished",
                           ended=now(), returncode=returncode, error=error, seconds=round(seconds, 1))
        if error:
            first = error.split("\n", 1)[0]
            last = error.rsplit("\n", 1)[-1] if "\n" in error else ""
            self.echo(f"    {r.run.id}: FAILED after {_fmt_time(seconds)}: {first}" + (f"\n      {last}" if last else ""))
            return Outcome("failed", seconds, error)
        self.echo(f"    {r.run.id}: finished in {_fmt_time(seconds)}")
        return Outcome("finished", seconds)

    def _fail_without_start(self, run: PlannedRun, state: str, error: str) -> Outcome:
        if run.kind != "data":
            write_run_json(run, self.records.get(run.backbone), status=state, ended=now(), error=error)
        self.echo(f"    {run.id}: {state.upper()}: {error}")
        return Outcome(state, 0.0, error)

    # ------------------------------------------------------------------ the plan
    def execute(self, runs: list[PlannedRun]) -> dict[str, Outcome]:
        """Run the plan; Ctrl-C or SIGTERM stops the running processes and raises KeyboardInterrupt."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            self.check_devices()
            return self._execute(runs)

        def on_term(signum, frame):
            raise KeyboardInterrupt

        self.check_devices()
        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            return self._execute(runs)
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _execute(self, runs: list[PlannedRun]) -> dict[str, Outcome]:
        out: dict[str, Outcome] = {}
        pending = list(runs)
        running: dict[str, _Running] = {}
        free_slots = list(range(self.jobs))
        total = len(runs)
        try:
            while pending or running:
                for run in list(pending):
                    if len(running) >= self.jobs:
                        break
                    dep_states = [out[d].state if d in out else None for d in run.deps]
                    bad = [d for d, s in zip(run.deps, dep_states) if s in FAILED]
                    if bad:
                        pending.remove(run)
                        out[run.id] = self._fail_without_start(run, "blocked", f"needs {', '.join(bad)}, which did not finish")
                        continue
                    if any(s is None for s in dep_states):
                        continue
                    pending.remove(run)
                    if finished(run):
                        out[run.id] = Outcome("done")
                        note = (f" (made with other options than the spec's now; delete {run.folder} to redo it)"
                                if changed_since(run) else "")
                        self.echo(f"[{len(out) + len(running)}/{total}] {run.id}: already finished, skipped{note}")
                        continue
                    if run.kind == "data" and not run.buildable:
                        out[run.id] = self._fail_without_start(
                            run, "failed", f"dataset folder {run.folder} is missing or empty and the spec says "
                                           "build: false; put the dataset there or fix its path in the spec")
                        continue
                    index = f"[{len(out) + len(running) + 1}/{total}]"
                    running[run.id] = self._start(run, free_slots.pop(0), index)
                if not running:
                    if pending:  # nothing can start: only possible with a broken plan
                        for run in pending:
                            out[run.id] = self._fail_without_start(run, "blocked", "its dependencies never ran")
                        pending.clear()
                    break
                time.sleep(self.poll)
                for rid, r in list(running.items()):
                    rc = r.proc.poll()
                    if rc is not None:
                        del running[rid]
                        free_slots.append(r.slot)
                        free_slots.sort()
                        out[rid] = self._finish(r, rc)
        except KeyboardInterrupt:
            for rid, r in running.items():
                r.proc.terminate()
            for rid, r in running.items():
                try:
                    r.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
                    r.proc.wait()
                r.log.close()
                out[rid] = self._fail_without_start(r.run, "interrupted", "the bench was stopped; run it again to resume")
            raise
        return out


def summarize(runs: list[PlannedRun], outcomes: dict[str, Outcome], echo: Callable[[str], None] = print) -> int:
    """Print what happened; return the number of runs that did not finish."""
    counts: dict[str, int] = {}
    for r in runs:
        s = outcomes[r.id].state if r.id in outcomes else "not run"
        counts[s] = counts.get(s, 0) + 1
    echo("runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    bad = [r for r in runs if r.id in outcomes and outcomes[r.id].state in FAILED]
    for r in bad:
        o = outcomes[r.id]
        echo(f"  {o.state}: {r.id}: {o.error.split(chr(10), 1)[0]}")
    return len(bad)

