"""Build a dataset folder atomically and describe it in ``dataset.json``.

A builder writes into a staging folder next to ``OUT``; only a finished build is renamed to
``OUT``, so a killed build never leaves a half-written dataset behind. ``OUT/dataset.json``
records what was built (kind, sizes, seed, source, classes, counts). Re-running the same
build finds the same ``dataset.json`` and skips the work; a different request refuses to touch
``OUT`` unless ``overwrite`` is set, and even then only replaces a folder that this tool made.

Usage::

    with staged_output(out, spec, overwrite=False) as stage:
        if stage is None:          # OUT already holds exactly this dataset
            ...
        else:
            write files under stage.path, set stage.counts = {...}
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .idx import DataError

MANIFEST = "dataset.json"


@dataclass
class Stage:
    """A staging folder being filled; ``counts`` goes into ``dataset.json`` at the end."""

    path: Path
    counts: dict = field(default_factory=dict)


def read_manifest(out: str | os.PathLike) -> dict | None:
    """The parsed ``OUT/dataset.json``, or None when there is none."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable dataset description ({e}); rebuild with --overwrite") from None


def _same_spec(manifest: dict, spec: dict) -> bool:
    return {k: v for k, v in manifest.items() if k != "counts"} == spec


@contextmanager
def staged_output(out: str | os.PathLike, spec: dict, overwrite: bool = False) -> Iterator[Stage | None]:
    """Yield a fresh :class:`Stage` to build ``spec`` into, or None if ``out`` already holds it.

    Args:
        out: the dataset folder to produce.
        spec: JSON-serialisable description of the request (without ``counts``).
        overwrite: replace an existing dataset folder made by this tool with different settings.
    """
    out = Path(out)
    spec = json.loads(json.dumps(spec))  # normalise tuples etc. as they will read back
    if out.exists():
        if not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder; choose another --out")
        manifest = read_manifest(out)
        if manifest is not None and _same_spec(manifest, spec) and not overwrite:
            yield None
            return
        if manifest is None and any(out.iterdir()):
            raise DataError(
                f"{out}: folder is not empty and was not made by `droppos data` (no {MANIFEST}); "
                "choose another --out"
            )
        if manifest is not None and not overwrite:
            raise DataError(
                f"{out}: holds a {manifest.get('kind', '?')} dataset built with other settings; "
                "pass --overwrite to replace it or choose another --out"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Stage(out.parent / f".{out.name}.partial-{os.getpid()}")
    if stage.path.exists():
        shutil.rmtree(stage.path)
    stage.path.mkdir()
    try:
        yield stage
        manifest = dict(spec, counts=stage.counts)
        (stage.path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage.path, out)
    finally:
        if stage.path.exists():
            shutil.rmtree(stage.path)


def progress(iterable, total: int, desc: str, enabled: bool = True):
    """Wrap ``iterable`` in a tqdm progress bar (on stderr) when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", mininterval=0.5, dynamic_ncols=True)
