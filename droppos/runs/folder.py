"""Run folders: claimed once per run, by one process, and joined by the others.

:func:`open_run` is the first thing every command that writes a run folder does, once its
processes are up (torchrun, srun, detectron2's launch or one process):

* the launching process, or global rank 0, **claims** the folder (:func:`claim`): an exclusive
  lock (``OUT/.droppos.lock``, ``fcntl.flock``) held until that process ends, so a second writer
  gets one line naming the holder's pid; a folder that holds a run of another kind
  (``OUT/droppos-run.json``, or for older folders the ``task``/``protocol`` of ``metrics.json``) is
  refused whatever ``--resume``/``--overwrite`` say; a finished or started run of the same kind
  needs ``--resume`` (or ``--overwrite``, which removes the engine's run files first); then the
  engine's own main-process checks run (``check``: data folders, the initial weights...);
* the outcome (the one line of a failure, or what the checks returned) is **broadcast** to every
  other process, which never claims: a failed claim ends every rank within seconds with the same
  line (printed once per machine), not at a barrier's time-out.

Files the benchmark writes beside a run (``run.json``, ``bench.log``) are no run of their own.
"""

from __future__ import annotations

import contextlib

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from droppos.errors import UserError
from droppos.utils.files import atomic_write_json, output_folder, read_json, remove_partial_writes

LOCK = ".droppos.lock"
KIND_FILE = "droppos-run.json"
_HELD: dict[str, object] = {}  # resolved path -> open lock file (kept open for the process lifetime)


class JoinError(UserError):
    """The failure of a claim, as seen by a process that did not make it. Only the first process of each
    machine prints it (``quiet`` on the others), so a run's log says it once per machine."""

    def __init__(self, message: str, quiet: bool = False):
        super().__init__(message)
        self.quiet = quiet


def run_kind(folder: str | Path) -> str | None:
    """The kind of run a folder holds (``"classify finetune"``, ``"detect"``, ...), or None."""
    from .tasks import kind_of_metrics

    folder = Path(folder)
    marker = read_json(folder / KIND_FILE)
    if isinstance(marker, dict) and isinstance(marker.get("kind"), str):
        return marker["kind"]
    m = read_json(folder / "metrics.json")
    if not isinstance(m, dict):
        return None
    return kind_of_metrics(m.get("task"), m.get("protocol"))


def lock(path: str | Path, what: str = "droppos process") -> None:
    """Hold an exclusive lock on ``path`` (a file, created) until this process ends; one line naming the
    holder's pid when another process holds it."""
    import fcntl

    path = Path(path)
    key = str(path.resolve())
    if key in _HELD:
        return
    try:
        f = open(path, "a+")
    except OSError as e:
        raise UserError(f"{path.parent}: cannot write into it ({e.strerror}); choose a writable --output") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise UserError(f"{path.parent} is in use by another {what} (pid {pid}); wait for it to end or choose "
                        "another --output") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _HELD[key] = f


def unlock(path: str | Path) -> None:
    f = _HELD.pop(str(Path(path).resolve()), None)
    if f is not None:
        f.close()


def release(folder: str | Path) -> None:
    """Give a run folder's lock back before the process ends (tests, long-lived callers)."""
    unlock(Path(folder) / LOCK)


def claim(folder: str | Path, kind: str, *, resume: bool = False, overwrite: bool = False,
          markers: Sequence[str] = ("metrics.json", "checkpoint.pth"), remove: Sequence[str] = (),
          continue_hint: str = "pass --resume to continue it or --overwrite to start over") -> Path:
    """Lock ``folder`` for this process, check its kind and whether a run may start or continue in it.

    ``markers``: files that show a run was made here (it then needs ``resume`` or ``overwrite``);
    ``remove``: the engine's run files that ``overwrite`` deletes; ``continue_hint``: how to go on.
    """
    folder = output_folder(folder)
    lock(folder / LOCK)
    have = run_kind(folder)
    if have is not None and have != kind:
        raise UserError(f"{folder} holds a '{have}' run; this is '{kind}': choose another --output (nothing was "
                        "changed)")
    held = [m for m in markers if (folder / m).exists()]
    if held and not (resume or overwrite):
        raise UserError(f"{folder} already holds a run ({held[0]}); {continue_hint} (or choose another --output)")
    if overwrite:
        for name in remove:
            (folder / name).unlink(missing_ok=True)
    remove_partial_writes(folder)  # what a kill during a write left: the lock says no writer is running
    if have is None:
        try:
            atomic_write_json(folder / KIND_FILE, {"kind": kind})
        except UserError:
            raise UserError(f"{folder}: cannot write into the run folder; choose a writable --output or free some "
                            "space") from None
    return folder


def _first_missing(folder: str | Path) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (a claim will create it), or None."""
    path, missing = Path(folder).absolute(), None
    while not path.exists() and path != path.parent:
        path, missing = path.parent, path
    return missing


@contextlib.contextmanager
def removed_on_failure(folder: str | Path, main: bool = True):
    """A run folder that did not exist before this block and holds nothing but its claim when the block fails is
    removed, with the folders created for it (a failed check leaves no empty run behind). Only ``main`` (the
    process that claims) removes anything."""
    created = _first_missing(folder) if main else None
    try:
        yield
    except BaseException:
        if created is not None:
            _undo_claim(Path(folder), created)
        raise


def _undo_claim(folder: Path, created: Path) -> None:
    """A run that failed before writing anything leaves no folder behind: its claim's marker and lock are
    removed, then the folders the claim created, each only if empty."""
    release(folder)
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError:  # never made (a file on its path, no permission): nothing to undo
        return
    if names <= {KIND_FILE, LOCK}:
        for name in (KIND_FILE, LOCK):
            (folder / name).unlink(missing_ok=True)
    path = folder.absolute()
    while True:
        try:
            path.rmdir()
        except OSError:  # not empty (or gone): stop
            return
        if path == created:
            return
        path = path.parent


def open_run(folder: str | Path, kind: str, info, device, *, check: Callable[[], Any] | None = None,
             **claim_options) -> Any:
    """Claim ``folder`` on the main process, run ``check()`` there, and share the outcome with every process.

    ``info`` is this process's :class:`droppos.utils.dist.DistInfo` and ``device`` its training device (the
    outcome travels through a collective on it). Returns what ``check`` returned, on every process; a
    failure is raised on every process: the main one re-raises its own error, the others a
    :class:`JoinError` with the same line.
    """
    from droppos.utils import dist as du

    error: Exception | None = None
    result = None
    if info.is_main:
        try:
            with removed_on_failure(folder):
                claim(folder, kind, **claim_options)
                result = check() if check is not None else None
        except Exception as e:  # noqa: BLE001 - every process must learn of it, then it is raised again
            error = e
    if du.world_size() > 1:
        message = None if error is None else (str(error) if isinstance(error, UserError) else
                                              f"process 0 failed ({type(error).__name__}: {error}); see its log")
        message, result = du.broadcast_object((message, result), device)
        if message is not None and error is None:
            raise JoinError(message, quiet=not info.is_local_main)
    if error is not None:
        raise error
    return result


def together(info, device, fn: Callable[[], Any]) -> Any:
    """``fn()`` on every process (set-up work without collectives: reading files, checking inputs); when it
    fails on any process, every process ends with the first failure's line (printed once per machine), so no
    process is left waiting for the others at their next collective."""
    from droppos.utils import dist as du

    error, result = None, None
    try:
        result = fn()
    except UserError as e:
        error = e
    if du.world_size() > 1:
        messages = du.all_gather_object(str(error) if error is not None else None, device)
        first = next((m for m in messages if m is not None), None)
        if first is not None:
            raise JoinError(first, quiet=not info.is_local_main)
    if error is not None:
        raise error
    return result
