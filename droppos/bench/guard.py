"""Run a command under a memory budget, and stop it on a condition.

The rehearsal starts real multi-process runs (torchrun, detectron2's launch) on a machine of 24 GiB:
:func:`run_guarded` polls the resident memory of every process of the run (its launcher and every
process it started, found through their parents: torchrun starts its workers in sessions of their
own) and ends them all with SIGKILL when their sum passes the budget, before the kernel's OOM killer
would pick a victim, maybe not the run. It also ends them when ``stop_when()`` becomes true (the
rehearsal's real kill after the first checkpoint). Linux only (``/proc``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class Guarded:
    returncode: int | None
    seconds: float
    peak_total_gib: float = 0.0
    peak_process_gib: float = 0.0  # the largest peak of any one process of the run
    over_budget: bool = False
    stopped: bool = False  # ended by stop_when()
    timed_out: bool = False
    per_process_gib: dict = field(default_factory=dict)


def tree_rss(root: int) -> dict[int, int]:
    """Resident bytes of ``root`` and of every process descended from it."""
    parent, rss = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/statm") as f:
                rss[int(entry.name)] = int(f.read().split()[1]) * PAGE
            parent[int(entry.name)] = int(fields[1])  # field 4 of stat (ppid), after the command name
        except (OSError, ValueError, IndexError):
            continue
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in rss and pid not in out:
            out[pid] = rss[pid]
            todo += children.get(pid, [])
    return out


def _kill(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_guarded(argv: list[str], env: dict, log: Path, budget_gib: float, stop_when: Callable[[], bool] | None = None,
                timeout_s: float | None = None, poll: float = 0.1, cwd: str | None = None) -> Guarded:
    """Run ``argv`` (stdout and stderr appended to ``log``) in a new session under ``budget_gib`` of resident
    memory; see the module docstring."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log, "ab") as f:
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=cwd)
    res = Guarded(None, 0.0)
    peaks: dict[int, int] = {}
    try:
        while proc.poll() is None:
            rss = tree_rss(proc.pid)
            for pid, b in rss.items():
                peaks[pid] = max(peaks.get(pid, 0), b)
            res.peak_total_gib = max(res.peak_total_gib, sum(rss.values()) / 2**30)
            if res.peak_total_gib > budget_gib:
                res.over_budget = True
            elif stop_when is not None and stop_when():
                res.stopped = True
            elif timeout_s is not None and time.monotonic() - t0 > timeout_s:
                res.timed_out = True
            if res.over_budget or res.stopped or res.timed_out:
                _kill(tree_rss(proc.pid))
                proc.wait()
                break
            time.sleep(poll)
    finally:
        if proc.poll() is None:
            _kill(tree_rss(proc.pid))
            proc.wait()
    res.returncode = proc.returncode
    res.seconds = time.monotonic() - t0
    res.per_process_gib = {pid: round(b / 2**30, 3) for pid, b in peaks.items()}
    res.peak_process_gib = max(res.per_process_gib.values(), default=0.0)
    return res
