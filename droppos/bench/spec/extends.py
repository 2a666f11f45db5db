"""Finding and reading spec files: shipped names, paths, and ``extends:``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .schema import SpecError

def read_raw(file: Path, seen: tuple = ()) -> Any:
    """The YAML of ``file``; ``extends: SPEC`` (a shipped name or a path) takes that spec's top-level keys
    first, this file's replacing them (e.g. ``extends: smoke`` with ``name`` and ``seeds``)."""
    import yaml

    if not file.is_file():
        raise SpecError(f"{file}: spec file not found")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{file}: not valid YAML ({e})") from None
    if not isinstance(raw, dict) or "extends" not in raw:
        return raw
    base = raw["extends"]
    if not isinstance(base, str) or not base:
        raise SpecError(f"{file}: extends: expected a spec name or path, got {base!r}")
    base_file = (file.parent / base) if (file.parent / base).is_file() else resolve_spec_path(base)
    if base_file.resolve() in seen + (file.resolve(),):
        raise SpecError(f"{file}: extends: {base!r} extends this spec again (a cycle)")
    merged = dict(read_raw(base_file, seen + (file.resolve(),)) or {})
    merged.update({k: v for k, v in raw.items() if k != "extends"})
    return merged


def shipped_specs() -> dict[str, Path]:
    """Bare name -> file of the specs shipped in ``droppos/bench/specs``."""
    folder = Path(__file__).parents[1] / "specs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_spec_path(name_or_path: str) -> Path:
    """A spec file path as given, or the shipped spec of a bare name (``smoke`` -> specs/smoke.yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = shipped_specs()
    if name_or_path in shipped:
        return shipped[name_or_path]
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        raise SpecError(f"{p}: spec file not found")
    raise SpecError(f"{name_or_path}: no such spec file, and no shipped spec of that name; "
                    f"shipped: {', '.join(shipped) or 'none'}")
