"""The graph of a spec's tasks: which task waits for which (``needs``, ``{task:NAME}``), checked for names
that exist and for cycles."""

from __future__ import annotations

import re

from .schema import Spec, TaskSpec

PLACEHOLDER = re.compile(r"\{(task|data):([A-Za-z0-9_.-]+)\}|\{(backbone|run)\}")


def task_references(t: TaskSpec) -> list[str]:
    """Task names this task waits for: ``needs`` and every ``{task:NAME}`` in its options (any backbone's)."""
    refs = list(t.needs)
    for v in [v for tv in (t, *t.variants.values()) for v in tv.options.values()]:
        for s in (v if isinstance(v, list) else [v]):
            if isinstance(s, str):
                refs += [m.group(2) for m in PLACEHOLDER.finditer(s) if m.group(1) == "task"]
    return list(dict.fromkeys(refs))


def check_references(c, spec: Spec) -> None:
    """Every ``{data:NAME}`` and waited-for task exists, no task waits for itself, no cycle; ``c.fail`` otherwise."""
    names = [t.name for t in spec.tasks]
    for i, t in enumerate(spec.tasks):
        key = f"tasks[{i}] ({t.name})"
        for v in [v for tv in (t, *t.variants.values()) for v in tv.options.values()]:
            for s in (v if isinstance(v, list) else [v]):
                if isinstance(s, str):
                    for m in PLACEHOLDER.finditer(s):
                        if m.group(1) == "data" and m.group(2) not in spec.data:
                            c.fail(f"{key}.options", f"{m.group(0)} names no data; defined: {sorted(spec.data)}")
        for ref in task_references(t):
            if ref not in names:
                c.fail(f"{key}", f"waits for task {ref!r}, which the spec does not define; tasks: {names}")
            if ref == t.name:
                c.fail(f"{key}", "a task cannot wait for itself")
    # cycles
    deps = {t.name: task_references(t) for t in spec.tasks}
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 1:
            c.fail("tasks", f"tasks wait for each other in a cycle: {' -> '.join(path + [n])}")
        if state.get(n) == 2:
            return
        state[n] = 1
        for d in deps[n]:
            visit(d, path + [n])
        state[n] = 2

    for n in deps:
        visit(n, [])
