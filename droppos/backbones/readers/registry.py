"""The registry of release layouts: each reader says once what it recognises and which head table applies.

A reader is a function ``read(obj, where, part) -> (raw, info)`` over the loaded checkpoint (or,
for a reader with ``suffix``, over the file's path). ``raw`` maps a key in this project's encoder
names (= timm / MAE names) to ``(tensor, None)``, or any other key to ``(tensor, reason)`` for a
weight that is dropped (pretext heads, classifiers); ``info`` holds what the file says about itself
(``method``/``epochs`` only when the file *describes* them, never from how it is packed), the ViT
``family`` whose head table applies, and notes for the key report.

Adding a layout is one decorated function in a module of this package (and the module's name in
``readers/__init__.py``)::

    @register("mylayout", order=45, recognise=lambda obj: "my_weights" in obj)
    def read_mylayout(obj, where, part=None): ...

``order`` is the recognition order: the first reader (lowest ``order``) whose ``recognise`` holds
reads the file; a reader without ``recognise`` is only chosen by ``--from`` (or by its ``suffix``).
A family's head table (width -> heads, from its model definitions) is registered once with
:func:`register_family`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from droppos.errors import UserError

Raw = dict[str, tuple[torch.Tensor, str | None]]

#: which network of a two-network checkpoint ``--part`` picks
PARTS = ("teacher", "student", "base", "momentum")


@dataclass(frozen=True)
class Reader:
    """One release layout (see the module docstring)."""

    name: str
    read: Callable
    order: int
    recognise: Callable[[dict], bool] | None = None
    suffix: str | None = None  # the reader takes the file's path, for files with this suffix (e.g. ".npz")


READERS: dict[str, Reader] = {}
FAMILY_HEADS: dict[str, dict[int, int]] = {}


def register(name: str, order: int, recognise: Callable[[dict], bool] | None = None, suffix: str | None = None):
    """Decorator: register ``read`` as the reader of layout ``name``."""

    def deco(read: Callable) -> Callable:
        if name in READERS:
            raise ValueError(f"reader {name!r} registered twice ({READERS[name].read.__module__} and {read.__module__})")
        READERS[name] = Reader(name, read, order, recognise, suffix)
        return read

    return deco


def register_family(name: str, heads: dict[int, int]) -> None:
    """The head count of each width in a ViT family's model definitions (``HEADS``: width -> heads)."""
    if name in FAMILY_HEADS and FAMILY_HEADS[name] != heads:
        raise ValueError(f"family {name!r} registered twice with different tables")
    FAMILY_HEADS[name] = dict(heads)


def formats() -> tuple[str, ...]:
    """Every layout name ``--from`` takes, in recognition order (``scratch`` last)."""
    return tuple(r.name for r in sorted(READERS.values(), key=lambda r: r.order)) + ("scratch",)


def by_suffix(suffix: str) -> Reader | None:
    """The reader that reads files with ``suffix`` itself (AugReg ``.npz``), or None."""
    return next((r for r in READERS.values() if r.suffix == suffix), None)


def detect_layout(obj: dict, where: str = "") -> str:
    """The layout of a loaded checkpoint dict: the first registered reader that recognises it."""
    for reader in sorted(READERS.values(), key=lambda r: r.order):
        if reader.recognise is not None and reader.recognise(obj):
            return reader.name
    keys = ", ".join(map(str, list(obj)[:8]))
    raise UserError(f"{where}no ViT encoder in this file (top-level keys: {keys}); force a layout with "
                    f"--from {{{','.join(formats())}}}")


def heads_for(width: int, family: str | None) -> tuple[int | None, str]:
    """(heads, why) for a width from the family's table, or from the agreement of every family."""
    if family in FAMILY_HEADS and width in FAMILY_HEADS[family]:
        return FAMILY_HEADS[family][width], f"the {family} family's value for width {width}"
    known = {f: t[width] for f, t in FAMILY_HEADS.items() if width in t}
    if family is None and known and len(set(known.values())) == 1:
        return next(iter(known.values())), f"every known ViT family has {next(iter(known.values()))} heads at width {width}"
    return None, ", ".join(f"{f} {h}" for f, h in sorted(known.items()))
