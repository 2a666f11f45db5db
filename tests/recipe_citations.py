"""The line citations of the published recipes (droppos/bench/recipes.py), parsed: (repo, path, line).

A citation is ``owner/name[@commit] path:line``; a bare ``mmsegmentation 1.x`` names the installed
mmsegmentation's configs. Every repository is read at one pinned commit (:data:`PINS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PINS = {
    "Haochen-Wang409/DropPos": "9cbc5fe",
    "facebookresearch/mae": "efb2a80",
    "facebookresearch/detectron2": "02b5c4e295e990042a714712c21dc79b731e8833",
    "open-mmlab/mmsegmentation": "v1.2.2 (the installed package's configs)",
}

_CITE = re.compile(r"(?:(?P<repo>[\w.-]+/[\w.-]+)(?:@\w+)?|(?P<mmseg>mmsegmentation))(?: 1\.x)? (?P<path>[\w./-]+):(?P<line>\d+)"
                   r"|(?<=[;,] )(?P<path2>[\w./-]+\.(?:py|sh|md)):(?P<line2>\d+)|(?<= and ):(?P<line3>\d+)")


@dataclass(frozen=True, order=True)
class Citation:
    repo: str
    path: str
    line: int

    @property
    def key(self) -> str:
        return f"{self.repo} {self.path}:{self.line}"


def parse(source: str) -> list[Citation]:
    """Every file:line a source string cites, a later ``; other.py:12`` or `` and :45`` in the same repository."""
    out: list[Citation] = []
    repo = path = None
    for m in _CITE.finditer(source):
        if m.group("path"):
            repo = "open-mmlab/mmsegmentation" if m.group("mmseg") else m.group("repo")
            path, line = m.group("path"), int(m.group("line"))
        elif m.group("path2") and repo:
            path, line = m.group("path2"), int(m.group("line2"))
        elif m.group("line3") and path:
            line = int(m.group("line3"))
        else:
            continue
        out.append(Citation(repo, path, line))
    return out


def published() -> dict[tuple[str, str], object]:
    """(recipe, field) -> its :class:`~droppos.bench.recipes.Published`; an official source that disagrees
    is its own entry, ``field~N`` (N from 1)."""
    from droppos.bench.recipes import RECIPES

    return {(name, f if i == 0 else f"{f}~{i}"): p for name, r in RECIPES.items() for f, pub in r.fields.items()
            for i, p in enumerate(pub.all())}


def citations() -> dict[tuple[str, str], list[Citation]]:
    """(recipe, field or ``field~N``) -> the lines its published value cites."""
    return {k: parse(p.source) for k, p in published().items()}
