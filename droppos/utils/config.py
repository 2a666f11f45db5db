"""Dataclass configs with command-line overrides and a resolved copy in every run folder.

A config is a flat ``@dataclass`` whose fields carry a one-line ``help`` in their metadata::

    @dataclass
    class Cfg:
        epochs: int = field(default=10, metadata={"help": "training epochs"})

``add_dataclass_arguments`` turns each field into ``--epochs`` (underscores become dashes);
``dataclass_from_args`` builds the config from a YAML/JSON file (``--config``) and then the
flags that were given on the command line, so flags win over the file and the file over the
defaults. ``write_config`` saves the resolved config as YAML and JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any, TypeVar

from droppos.errors import UserError

T = TypeVar("T")


def opt(default: Any, help: str, **kw) -> Any:
    """A dataclass field with a one-line help text; ``ge``/``gt``/``le``/``lt`` bound a number,
    ``choices`` a string (checked by :func:`check_fields`)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def _bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {s!r}")


def _field_type(cls, f: dataclasses.Field):
    hints = typing.get_type_hints(cls)
    t = hints[f.name]
    origin = typing.get_origin(t)
    args = [a for a in typing.get_args(t) if a is not type(None)]
    optional = origin is typing.Union or (origin is not None and type(None) in typing.get_args(t))
    if optional and len(args) == 1:
        t = args[0]
        origin = typing.get_origin(t)
    return t, origin, optional


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None,
                            extra_help: dict[str, str] | None = None, required: set[str] | frozenset = frozenset()) -> None:
    """Add one ``--flag`` per field of ``cls``; unset flags stay ``None`` so file values survive.

    Field metadata: ``help``; ``choices``; ``flag`` (the flag's spelling, default ``--field-name``);
    ``aliases`` (old spellings, accepted with a deprecation note, hidden from ``--help``);
    ``switch`` (a boolean given as ``--flag`` alone, or ``--flag true|false``); ``metavar``.
    """
    group = parser.add_argument_group(title or f"{cls.__name__} options (defaults shown)")
    for f in dataclasses.fields(cls):
        if any(a.dest == f.name for a in parser._actions):  # already given by an enclosing vocabulary
            continue
        t, origin, optional = _field_type(cls, f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f.metadata.get("help", "") + (extra_help or {}).get(f.name, "")
        choices = f.metadata.get("choices")
        shown = "" if "default" in help_ or default in ("", None) else f" (default: {default})"
        kw: dict[str, Any] = dict(dest=f.name, default=None, help=f"{help_}{shown}")
        if choices:
            kw["choices"] = choices
        if t is bool:
            kw.update(type=_bool, metavar="BOOL")
            if f.metadata.get("switch"):
                kw.update(nargs="?", const=True, metavar="true|false")
        elif origin in (list, tuple):
            (inner,) = set(typing.get_args(t)) - {Ellipsis} or {str}
            kw.update(type=inner, nargs="*")
        elif t in (int, float, str):
            kw.update(type=(lambda s, t=t: None if s.lower() == "none" else t(s)) if optional else t)
        else:
            kw.update(type=str)
        if f.metadata.get("metavar"):
            kw["metavar"] = f.metadata["metavar"]
        if f.name in required:
            kw["required"] = True
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        group.add_argument(flag, **kw)
        for alias in f.metadata.get("aliases", ()):
            assert DEPRECATED_FLAGS[alias][0] == flag, alias
            add_deprecated(group, alias, **{k: v for k, v in kw.items() if k not in ("help", "required")})


def to_args(cfg: Any) -> list[str]:
    """The flags that give ``cfg`` (fields left at their default are left out): what
    :func:`add_dataclass_arguments` reads back into the same config."""
    out: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if value == default:
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            out += [flag] if value and f.metadata.get("switch") else [flag, "true" if value else "false"]
        elif isinstance(value, (list, tuple)):
            out += [flag, *map(str, value)]
        else:
            out += [flag, "none" if value is None else str(value)]
    return out


#: every old flag spelling still accepted: old -> (the flag that replaces it, the release that removes it)
DEPRECATED_FLAGS = {
    "--init": ("--backbone", "0.2.0"),  # detect, segment
    "--source-format": ("--from", "0.2.0"),  # classify, probe, convert
    "--work-dir": ("--output", "0.2.0"),  # segment
}


def add_deprecated(parser, old: str, dest: str, **kw) -> None:
    """Accept ``old`` (a key of :data:`DEPRECATED_FLAGS`) as its replacement, hidden from ``--help``."""
    new, _ = DEPRECATED_FLAGS[old]
    parser.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, help=argparse.SUPPRESS, **kw)


def given_once(parser: argparse.ArgumentParser, dest: str, option_string: str, values) -> None:
    """Remember that ``option_string`` set ``dest`` to ``values`` in this parse; a second, different value for
    the same option (or its deprecated spelling) is a :class:`UserError` naming both."""
    given = parser.__dict__.setdefault("_given_options", {})
    if dest in given and given[dest][1] != values:
        first, value = given[dest]
        if first == option_string:
            raise UserError(f"{option_string} is given twice ({value!r}, then {values!r}); give it once")
        raise UserError(f"{first} {value!r} and {option_string} {values!r} set the same option; give one")
    given[dest] = (option_string, values)


class DeprecatedAlias(argparse.Action):
    """An old flag spelling (:data:`DEPRECATED_FLAGS`): stores like the new one and says that it is deprecated."""

    def __init__(self, option_strings, dest, new: str, nargs=None, **kw):
        self.new = new
        super().__init__(option_strings, dest, nargs=nargs, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        given_once(parser, self.dest, option_string, values)
        removed = DEPRECATED_FLAGS[option_string][1]
        print(f"droppos: note: {option_string} is deprecated and will be removed in {removed}; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def load_mapping(path: str | Path) -> dict:
    """Read a YAML or JSON mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - report any parse error with the file name
        raise UserError(f"{path}: cannot parse config: {e}")
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must hold a mapping of option: value")
    return data


def from_mapping(cls: type[T], data: dict, source: str = "config") -> T:
    """Build ``cls`` from a mapping, refusing unknown keys (a typo is an error, not ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        import difflib

        close = [f"{u!r}: did you mean {c[0]!r}?" for u in unknown if (c := difflib.get_close_matches(u, names, n=1))]
        raise UserError(f"{source}: unknown option(s) {unknown}{' (' + '; '.join(close) + ')' if close else ''} for "
                        f"{cls.__name__}; valid: {sorted(names)}")
    cfg = cls(**data)
    check_fields(cfg, source)
    return cfg


_BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
           "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def check_fields(cfg: Any, source: str = "") -> None:
    """Every field of a dataclass config has its type and lies in its range (field metadata); one line
    naming the option, the allowed values and where the value came from."""
    import math

    cls = type(cfg)
    for f in dataclasses.fields(cls):
        v = getattr(cfg, f.name)
        t, origin, optional = _field_type(cls, f)
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        where = f" (from {source})" if source and source != "command line" else ""
        if v is None:
            if optional or f.default is None:
                continue
            raise UserError(f"{flag} must be given{where}")
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(t)
        ok = (isinstance(v, bool) if t is bool else
              isinstance(v, int) and not isinstance(v, bool) if t is int else
              isinstance(v, (int, float)) and not isinstance(v, bool) if t is float else
              isinstance(v, str) if t is str else True)
        rules = [f"{sym} {f.metadata[k]:g}" for k, (sym, _) in _BOUNDS.items() if k in f.metadata]
        rule = f"{kind}" + (f" {' and '.join(rules)}" if rules else "")
        if not ok:
            raise UserError(f"{flag} must be {rule}, got {v!r}{where}")
        if t is float and not math.isfinite(v):
            raise UserError(f"{flag} must be a finite number{' ' + ' and '.join(rules) if rules else ''}, got {v}{where}")
        if any(not test(v, f.metadata[k]) for k, (_, test) in _BOUNDS.items() if k in f.metadata):
            raise UserError(f"{flag} must be {rule}, got {v!r}{where}")
        choices = f.metadata.get("choices")
        if choices and v not in choices:
            raise UserError(f"{flag} must be one of {', '.join(map(str, choices))}, got {v!r}{where}")


def dataclass_from_args(cls: type[T], args: argparse.Namespace, base: dict | None = None) -> T:
    """Defaults < ``base`` < ``--config`` file < command-line flags."""
    data = dict(base or {})
    cfg_file = getattr(args, "config", None)
    if cfg_file:
        data.update(load_mapping(cfg_file))
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            data[f.name] = v
    return from_mapping(cls, data, source=str(cfg_file or "command line"))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def write_config(cfg: Any, out_dir: str | Path, name: str = "config") -> Path:
    """Write the resolved config as ``name.yaml`` (and ``name.json``) into ``out_dir``."""
    import yaml

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    d = cfg if isinstance(cfg, dict) else to_dict(cfg)
    (out_dir / f"{name}.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    path = out_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=True))
    return path


def shipped_config(name: str | Path, folder: Path) -> Path:
    """A config file path as given, or the name of a config shipped in ``folder`` (with or without
    ``.py``); otherwise one line naming the shipped ones."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".py")
    shipped = folder / f"{stem}.py"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    names = sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))
    raise UserError(f"{name}: no such config file; give a path or one of: {', '.join(names)}")


def check_override_keys(cfg, keys, flag: str = "override") -> None:
    """Every dotted ``key`` names an existing field of ``cfg`` (mappings, list indices as numbers, or
    an argument of the class a node builds: detectron2's ``_target_``, mmengine's ``type``); a typo is
    one line naming the closest existing key, instead of a silently added field."""
    import difflib
    from collections.abc import Mapping, Sequence

    for key in keys:
        node, path = cfg, []
        for part in str(key).split("."):
            if isinstance(node, Mapping) or hasattr(node, "keys"):
                names = [str(k) for k in node.keys()]
                if part in names:
                    node, path = node[part], path + [part]
                    continue
                params = _built_params(node)
                if params is None or part in params:
                    break  # an argument of the built class (or a class whose arguments cannot be listed)
                names += sorted(params)
            elif isinstance(node, Sequence) and not isinstance(node, str) and part.isdigit() and int(part) < len(node):
                node, path = node[int(part)], path + [part]
                continue
            else:
                names = []
            close = difflib.get_close_matches(part, names, n=1)
            where = f"under '{'.'.join(path)}'" if path else "at the top level"
            hint = f"; did you mean {'.'.join(path + close)}?" if close else (
                f"; it has: {', '.join(sorted(names)[:12])}" if names else "")
            raise UserError(f"{flag} {key}: the config has no '{part}' {where}{hint}")


def _built_params(node) -> set[str] | None:
    """Argument names of the class a config node builds; None when unknown or when it takes ``**kwargs``."""
    import inspect

    target = node.get("_target_") if hasattr(node, "get") else None
    if target is None and hasattr(node, "get") and node.get("type") is not None:
        target = _registered(node.get("type"))
    if target is None:
        return set() if not (hasattr(node, "get") and (node.get("type") or node.get("_target_"))) else None
    if isinstance(target, str):
        from pydoc import locate

        target = locate(target)
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return set(sig.parameters)


def _registered(name):
    """The class an mmengine ``type`` names (a class already, or a name in mmseg's / mmengine's registries)."""
    if not isinstance(name, str):
        return name
    try:
        from mmengine import registry as mme
        from mmseg import registry as mms
    except ImportError:
        return None
    for module in (mms, mme):
        for reg_name in dir(module):
            reg = getattr(module, reg_name)
            if hasattr(reg, "get") and hasattr(reg, "module_dict"):
                try:
                    found = reg.get(name)
                except Exception:  # noqa: BLE001 - a registry that cannot build this name
                    found = None
                if found is not None:
                    return found
    return None
