"""Atomic writes: a file is either its previous version or the whole new one, never half of each.

Every file the project writes into a run folder goes through :func:`atomic_write` (the JSON
records, resolved configs, checkpoints): a temporary file in the same folder, flushed and
fsync'ed, then renamed over the target. A failed write (read-only folder, full disk) leaves the
previous file as it was and is one line naming the path.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def output_folder(path: str | Path, flag: str = "--output") -> Path:
    """Create the folder a command writes into; a file (or a file on its path) in its place, or a folder that
    cannot be made, is one line naming it and ``flag``. Nothing that is there is changed."""
    from droppos.errors import UserError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: is a file, not a folder; choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path}: cannot create the folder ({e.strerror}); choose a writable {flag}") from None
    return path


#: the temporary file of an :func:`atomic_write` of NAME: ``.NAME.<8 characters of mkstemp>.tmp``
PARTIAL_WRITE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_partial_writes(folder: Path) -> int:
    """Delete the temporary files that writes cut short by a kill left in ``folder`` and its subfolders (a
    checkpoint's is as large as the checkpoint); only for a folder this process holds the lock of. Returns
    the bytes freed."""
    freed = 0
    for f in Path(folder).rglob(".*.tmp"):
        if PARTIAL_WRITE.match(f.name) and f.is_file() and not f.is_symlink():
            freed += f.stat().st_size
            f.unlink(missing_ok=True)
    return freed


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """``write(f)`` into a temporary file beside ``path``, then rename it over ``path``; a kill leaves the
    temporary file, which the next claim of the run folder removes (:func:`remove_partial_writes`)."""
    from droppos.errors import UserError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"{path}: cannot write here ({e.strerror}); choose a writable --output") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        _unlink(tmp)
        raise UserError(f"{path}: could not be written ({write_failure(e, path.parent)}); the previous file is "
                        "unchanged: free some space or choose another --output") from None
    except BaseException:
        _unlink(tmp)
        raise
    return path


def _unlink(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def write_failure(e: BaseException, folder: Path) -> str:
    """Why a write failed, in words: the OS's reason, else the free space left on the disk."""
    import shutil

    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return str(e).splitlines()[0]
    return f"{free / 2**20:.1f} MiB free on its disk; {str(e).splitlines()[0]}"


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, data: Any, **dumps) -> Path:
    """``data`` as JSON (indent 2 unless given; one trailing newline)."""
    dumps.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(data, **dumps) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON of ``path``, or None when it is absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
