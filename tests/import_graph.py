"""The import graph of the ``droppos`` namespace, read from the source files (test helper).

The namespace's subpackages live in the repository's top-level folders (``pyproject.toml``'s
``package-dir``), which import-linter's graph builder (grimp) cannot follow: it finds only the files
under ``droppos/``. This reads the same mapping and every ``import`` statement, including those inside
functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    in_function: bool

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} (line {self.line}{', inside a function' if self.in_function else ''})"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the namespace -> its file, by ``[tool.setuptools] package-dir``."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = config["package-dir"]
    out: dict[str, Path] = {}
    for package in sorted(dirs, key=len):
        base = root / dirs[package]
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            name = ".".join((package, *rel.parts)).removesuffix(".__init__")
            owner = max((p for p in dirs if name == p or name.startswith(p + ".")), key=len)
            if owner == package:  # a folder mapped to another package is that package's
                out[name] = path
    return out


def edges(root: Path = ROOT) -> list[Edge]:
    """Every import of one module of the namespace by another."""
    mods = modules(root)
    out = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != name:
                    out.append(Edge(name, target, node.lineno, id(node) in inside))
    return list(dict.fromkeys(out))  # ``from a import b, c`` of one module: one edge


def cycles(found: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in found:
        graph[e.importer].add(e.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result
