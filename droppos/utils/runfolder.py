"""Run folders are exclusive and keep their kind: one writer at a time, one kind of run per folder.

:func:`claim` is the first thing every command that writes a run folder does (on the main process):

* it takes an exclusive lock (``OUT/.droppos.lock``, ``fcntl.flock``) held until the process ends;
  a second writer gets one line naming the holder's pid;
* it refuses a folder that holds a run of another kind (``OUT/droppos-run.json``, or for folders
  made before that file existed, the ``task``/``protocol`` of ``metrics.json``), whatever
  ``--resume``/``--overwrite`` say: ``classify --overwrite`` never deletes a pretraining;
* it records the kind. Whether a finished run of the *same* kind may be continued or replaced is
  each command's own rule (``--resume`` / ``--overwrite``), checked before anything is written.

Files the benchmark writes beside a run (``run.json``, ``bench.log``) are no run of their own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from droppos.errors import UserError

LOCK = ".droppos.lock"
KIND_FILE = "droppos-run.json"
_HELD: dict[str, object] = {}  # folder -> open lock file (kept open for the process lifetime)
_METRICS_KIND = {("pretrain", None): "pretrain", ("classification", "finetune"): "classify finetune",
                 ("classification", "linear"): "classify linear", ("classification", "knn"): "classify knn",
                 ("detection", None): "detect", ("segmentation", None): "segment",
                 ("probe", "position"): "probe position", ("probe", "order"): "probe order"}


def run_kind(folder: str | Path) -> str | None:
    """The kind of run a folder holds (``"classify finetune"``, ``"detect"``, ...), or None."""
    folder = Path(folder)
    try:
        return json.loads((folder / KIND_FILE).read_text())["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        m = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict):
        return None
    task, protocol = m.get("task"), m.get("protocol")
    return _METRICS_KIND.get((task, protocol)) or _METRICS_KIND.get((task, None))


def claim(folder: str | Path, kind: str, main_process: bool = True) -> Path:
    """Lock ``folder`` for this process and check/record its kind (see the module docstring)."""
    folder = Path(folder)
    if not main_process:
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder}: cannot create the run folder ({e.strerror}); choose a writable --output") from None
    _lock(folder)
    have = run_kind(folder)
    if have is not None and have != kind:
        raise UserError(f"{folder} holds a '{have}' run; this is '{kind}': choose another --output (nothing was "
                        "changed)")
    if have is None:
        try:
            (folder / KIND_FILE).write_text(json.dumps({"kind": kind}) + "\n")
        except OSError as e:
            raise UserError(f"{folder}: cannot write into the run folder ({e.strerror}); choose a writable --output "
                            "or free some space") from None
    return folder


def _lock(folder: Path) -> None:
    import fcntl

    key = str(folder.resolve())
    if key in _HELD:
        return
    path = folder / LOCK
    try:
        f = open(path, "a+")
    except OSError as e:
        raise UserError(f"{folder}: cannot write into the run folder ({e.strerror}); choose a writable --output") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise UserError(f"{folder} is in use by another droppos process (pid {pid}); wait for it to end or choose "
                        "another --output") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _HELD[key] = f


def release(folder: str | Path) -> None:
    """Give the lock back before the process ends (tests, long-lived callers)."""
    f = _HELD.pop(str(Path(folder).resolve()), None)
    if f is not None:
        f.close()
