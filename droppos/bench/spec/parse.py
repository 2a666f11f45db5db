"""Parsing a spec: every key checked where it is read, each problem one :class:`~.schema.SpecError` naming the
file and the key."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

from droppos.backbones.options import BackboneOptions
from droppos.errors import UserError
from droppos.runs.tasks import task_kind
from droppos.utils.config import check_fields

from ..recipes import RECIPES
from .graph import check_references
from .schema import (BENCH_SET, CLASSIFY_PROTOCOLS, DATA_BUILD_KEYS, DATA_KINDS, NAME, PROBE_PROTOCOLS, RESERVED,
                     SPEC_BACKBONE_KEYS, TASK_KINDS, BackboneSpec, DataSpec, Spec, SpecError, TaskSpec)

class _Checker:
    """Helpers that raise SpecError with '<file>: <key>: <problem>'."""

    def __init__(self, file: Path):
        self.file = file

    def fail(self, key: str, msg: str):
        raise SpecError(f"{self.file}: {key}: {msg}" if key else f"{self.file}: {msg}")

    def mapping(self, value, key: str) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping (key: value), got {type(value).__name__}")
        return value

    def known(self, d: dict, key: str, allowed, required=()):
        unknown = sorted(set(map(str, d)) - set(allowed))
        if unknown:
            close = {u: difflib.get_close_matches(u, list(allowed), n=1) for u in unknown}
            hint = "; ".join(f"{u!r}: did you mean {c[0]!r}?" for u, c in close.items() if c)
            self.fail(key, f"unknown key(s) {unknown}{' (' + hint + ')' if hint else ''}; allowed: {sorted(allowed)}")
        missing = [k for k in required if k not in d]
        if missing:
            self.fail(key, f"missing required key(s) {missing}")

    def name(self, value, key: str) -> str:
        if not isinstance(value, str) or not NAME.match(value):
            self.fail(key, f"{value!r} is not a usable name (letters, digits, '_', '.', '-'; it becomes a folder)")
        if value in RESERVED:
            self.fail(key, f"{value!r} is reserved (folders OUT/data, OUT/results, OUT/<backbone>/pretrain)")
        return value

    def string(self, value, key: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a non-empty string, got {value!r}")
        return value

    def seeds(self, value, key: str) -> list[int]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if (not isinstance(value, list) or not value
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
            self.fail(key, f"expected a list of non-negative integers, got {value!r}")
        if len(set(value)) != len(value):
            self.fail(key, f"repeated seed in {value}")
        return list(value)

    def option_values(self, options: dict, key: str) -> None:
        for k, v in options.items():
            if not isinstance(k, str) or not k:
                self.fail(key, f"option names must be strings, got {k!r}")
            ok = v is None or isinstance(v, (bool, int, float, str)) or (
                isinstance(v, list) and all(isinstance(x, (bool, int, float, str)) for x in v))
            if not ok:
                self.fail(f"{key}.{k}", f"expected a number, string, boolean or list of them, got {v!r}")

    def recipe(self, value, key: str, kind: str) -> str:
        if value not in RECIPES:
            self.fail(key, f"no published recipe named {value!r}; known: {sorted(RECIPES)}")
        if RECIPES[value].kind != kind:
            self.fail(key, f"{value!r} is a {RECIPES[value].kind} recipe, not a {kind} one")
        return value

    def deviations(self, value, key: str) -> dict:
        d = self.mapping(value, key)
        for k, v in d.items():
            if not isinstance(k, str) or not isinstance(v, str) or not v.strip():
                self.fail(f"{key}.{k}", "a deliberate difference needs its reason: field: why")
        return dict(d)

    def schedule(self, value, key: str) -> dict:
        d = self.mapping(value, key)
        if len(d) != 1 or next(iter(d)) not in ("epochs", "iters"):
            self.fail(key, f"expected {{epochs: N}} or {{iters: N}}, got {d!r}")
        n = next(iter(d.values()))
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            self.fail(key, f"expected a positive integer, got {n!r}")
        return dict(d)


def _dataclass_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _classify_fields(protocol: str) -> set[str]:
    from droppos.transfer.classification.config import CONFIGS

    return _dataclass_fields(CONFIGS[protocol])


def _probe_fields(protocol: str) -> set[str] | None:
    """Option names of a probe protocol, or None when the probes' configs cannot be read."""
    try:
        from droppos.transfer.probes import config as probe_config
    except ImportError:
        return None
    configs = getattr(probe_config, "CONFIGS", None)
    if not isinstance(configs, dict) or protocol not in configs:
        return None
    return _dataclass_fields(configs[protocol])


def _load_data(c: _Checker, raw) -> dict[str, DataSpec]:
    raw = c.mapping(raw, "data")
    out = {}
    for name, entry in raw.items():
        key = f"data.{name}"
        if not isinstance(name, str) or not NAME.match(name):
            c.fail(key, "data names are letters, digits, '_', '.', '-'")
        entry = c.mapping(entry, key)
        c.known(entry, key, ("kind", "path", "build", "dataset"), required=("path",))
        kind = entry.get("kind", name)
        if kind not in DATA_KINDS:
            c.fail(f"{key}.kind", f"{kind!r} is not a data kind; set kind: to one of {list(DATA_KINDS)}")
        build = entry.get("build", {})
        if build is False:
            build = None
        elif build is None or build is True:
            build = {}
        else:
            build = c.mapping(build, f"{key}.build")
            c.known(build, f"{key}.build", DATA_BUILD_KEYS[kind])
            c.option_values(build, f"{key}.build")
        dataset = entry.get("dataset", "")
        if not isinstance(dataset, str):
            c.fail(f"{key}.dataset", f"expected a string, got {dataset!r}")
        out[name] = DataSpec(name, kind, c.string(entry["path"], f"{key}.path"), build, dataset)
    return out


def _load_backbone(c: _Checker, raw, i: int, data: dict[str, DataSpec]) -> BackboneSpec:
    from droppos.pretrain.config import PretrainConfig

    key = f"backbones[{i}]"
    raw = c.mapping(raw, key)
    c.known(raw, key, ("name", "pretrain", *SPEC_BACKBONE_KEYS, "recipe", "deviations", "pretrain_seeds"),
            required=("name",))
    name = c.name(raw["name"], f"{key}.name")
    key = f"backbones[{i}] ({name})"
    if ("pretrain" in raw) == ("checkpoint" in raw):
        c.fail(key, "give exactly one of 'pretrain: {...}' (make it) or 'checkpoint: PATH' (use it)")
    if "pretrain" not in raw:
        for k in ("recipe", "deviations", "pretrain_seeds"):
            if k in raw:
                c.fail(f"{key}.{k}", "applies to backbones pretrained here (pretrain: {...}); a checkpoint's "
                                     "recipe is its publisher's")
    if "pretrain" in raw:
        for k in [k for k in SPEC_BACKBONE_KEYS if k != "checkpoint"]:
            if k in raw:
                c.fail(f"{key}.{k}", "applies to 'checkpoint' backbones only (a pretraining records its own)")
        pt = dict(c.mapping(raw["pretrain"], f"{key}.pretrain"))
        fields = _dataclass_fields(PretrainConfig)
        if "output" in pt:
            c.fail(f"{key}.pretrain.output", "set by the bench (OUT/<backbone>/pretrain); remove it")
        if "name" in pt:
            c.fail(f"{key}.pretrain.name", "set by the bench (the backbone's name, its results row); remove it")
        c.known(pt, f"{key}.pretrain", fields - {"output", "name"})
        c.option_values(pt, f"{key}.pretrain")
        if "data" not in pt:
            pt["data"] = next((n for n, d in data.items() if d.kind == "imagefolder"), None)
            if pt["data"] is None:
                c.fail(f"{key}.pretrain.data", "no imagefolder dataset in data: to pretrain on; add one, "
                                               "or give pretrain.data: a folder path")
        if not isinstance(pt["data"], str) or not pt["data"]:
            c.fail(f"{key}.pretrain.data", f"expected a data name or a folder path, got {pt['data']!r}")
        if pt["data"] in data and data[pt["data"]].kind != "imagefolder":
            c.fail(f"{key}.pretrain.data", f"{pt['data']!r} is a {data[pt['data']].kind} dataset; "
                                           "pretraining reads an imagefolder")
        try:
            cfg = PretrainConfig(**{k: v for k, v in pt.items() if k != "data"})
            cfg.validate()
        except (TypeError, UserError) as e:
            c.fail(f"{key}.pretrain", str(e))
        recipe = c.recipe(raw["recipe"], f"{key}.recipe", "pretrain") if "recipe" in raw else None
        deviations = c.deviations(raw.get("deviations") or {}, f"{key}.deviations")
        seeds = None
        if "pretrain_seeds" in raw:
            seeds = c.seeds(raw["pretrain_seeds"], f"{key}.pretrain_seeds")
            if "seed" in pt:
                c.fail(f"{key}.pretrain.seed", "give the pretraining seeds once: pretrain_seeds: [...] sets each "
                                               "pretraining's seed")
        return BackboneSpec(name=name, pretrain=pt, recipe=recipe, deviations=deviations, pretrain_seeds=seeds)
    fmt = raw.get("from")
    if fmt is not None:
        from droppos.backbones.source import FORMATS  # imports torch: only when needed

        if fmt not in FORMATS:
            c.fail(f"{key}.from", f"{fmt!r} is not a converter format; choose one of {list(FORMATS)}")
    for k, want in (("checkpoint", str), ("trust_pickle", bool), ("arch", str), ("part", str), ("method", str),
                    ("epochs", int), ("pretrained", bool)):
        v = raw.get(k)
        if v is not None and (not isinstance(v, want) or (want is int and isinstance(v, bool))):
            what = {str: "a string", bool: "true or false", int: "an integer"}[want]
            c.fail(f"{key}.{k}", f"expected {what}, got {v!r}")
    source = BackboneOptions(name=name, **{SPEC_BACKBONE_KEYS[k]: raw[k] for k in SPEC_BACKBONE_KEYS if k in raw})
    source.backbone = c.string(source.backbone, f"{key}.checkpoint")
    try:
        check_fields(source, f"{key}")
    except UserError as e:
        c.fail(key, str(e))
    return BackboneSpec(name=name, source=source)


PER_BACKBONE_KEYS = ("options", "config", "schedule", "recipe", "deviations")


def _load_task(c: _Checker, raw, i: int, data: dict[str, DataSpec], backbones: list[str],
               variant: str = "") -> TaskSpec:
    key = f"tasks[{i}]"
    raw = c.mapping(raw, key)
    allowed = ("name", "kind", "protocol", "config", "data", "options", "schedule", "seeds", "backbones", "needs",
               "recipe", "deviations", "per_backbone")
    c.known(raw, key, allowed, required=("name", "kind"))
    name = c.name(raw["name"], f"{key}.name")
    key = f"tasks[{i}] ({name})" + (f".per_backbone.{variant}" if variant else "")
    kind = raw["kind"]
    if kind not in TASK_KINDS:
        c.fail(f"{key}.kind", f"{kind!r} is not a task kind; choose one of {list(TASK_KINDS)}")
    want = TASK_KINDS[kind]
    default_data = next((n for n, d in data.items() if d.kind == want), None)
    data_name = raw.get("data", default_data)
    if data_name is None:
        c.fail(f"{key}.data", f"a {kind} task needs a {want} dataset; add one under data:")
    if data_name not in data:
        c.fail(f"{key}.data", f"no data named {data_name!r}; defined: {sorted(data)}")
    if data[data_name].kind != want:
        c.fail(f"{key}.data", f"{data_name!r} is a {data[data_name].kind} dataset; a {kind} task reads {want}")
    options = dict(c.mapping(raw.get("options") or {}, f"{key}.options"))
    c.option_values(options, f"{key}.options")
    t = TaskSpec(name=name, kind=kind, data=data_name, options=options)
    if kind in ("classify", "probe"):
        protocols = CLASSIFY_PROTOCOLS if kind == "classify" else PROBE_PROTOCOLS
        if raw.get("protocol") not in protocols:
            c.fail(f"{key}.protocol", f"a {kind} task needs protocol: one of {list(protocols)}, got {raw.get('protocol')!r}")
        if "config" in raw:
            c.fail(f"{key}.config", f"{kind} tasks take their settings from options:, not config:")
        t.protocol = raw["protocol"]
        for k in options:
            if k in BENCH_SET:
                c.fail(f"{key}.options.{k}", f"set by the bench from {BENCH_SET[k]}; remove it")
        fields = _classify_fields(t.protocol) if kind == "classify" else _probe_fields(t.protocol)
        if fields is not None:
            c.known(options, f"{key}.options", fields - set(BENCH_SET))
    else:
        if "protocol" in raw:
            c.fail(f"{key}.protocol", f"{kind} tasks have no protocol; name the recipe with config:")
        t.config = c.string(raw.get("config"), f"{key}.config")
        bad = [k for k in options if "=" in k or " " in k]
        if bad:
            c.fail(f"{key}.options", f"option names are config keys (a.b.c), got {bad}")
    if raw.get("schedule") is not None:
        t.schedule = c.schedule(raw["schedule"], f"{key}.schedule")
    if "seeds" in raw:
        t.seeds = c.seeds(raw["seeds"], f"{key}.seeds")
        if len(t.seeds) > 1 and kind in ("classify", "probe") and not task_kind(kind, t.protocol).seeded:
            c.fail(f"{key}.seeds", f"{t.protocol} does not depend on its seed (fixed features, a deterministic "
                                   "vote): more seeds repeat one number; give it one seed (what varies it is the "
                                   "pretraining)")
    if "backbones" in raw:
        bbs = raw["backbones"]
        if not isinstance(bbs, list) or not bbs or not all(isinstance(b, str) for b in bbs):
            c.fail(f"{key}.backbones", f"expected a list of backbone names, got {bbs!r}")
        unknown = [b for b in bbs if b not in backbones]
        if unknown:
            c.fail(f"{key}.backbones", f"unknown backbone(s) {unknown}; defined: {backbones}")
        t.backbones = list(bbs)
    needs = raw.get("needs", [])
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        c.fail(f"{key}.needs", f"expected a list of task names, got {needs!r}")
    t.needs = list(needs)
    if raw.get("recipe") is not None:
        t.recipe = c.recipe(raw["recipe"], f"{key}.recipe", kind)
        if RECIPES[t.recipe].protocol and RECIPES[t.recipe].protocol != t.protocol:
            c.fail(f"{key}.recipe", f"{t.recipe!r} is a {RECIPES[t.recipe].protocol} recipe; this task runs {t.protocol}")
    t.deviations = c.deviations(raw.get("deviations") or {}, f"{key}.deviations")
    per = c.mapping(raw.get("per_backbone") or {}, f"{key}.per_backbone")
    for bb, entry in per.items():
        if bb not in backbones or (t.backbones is not None and bb not in t.backbones):
            c.fail(f"{key}.per_backbone.{bb}", f"{bb!r} is not a backbone this task runs on; "
                                               f"its backbones: {t.backbones or backbones}")
        entry = c.mapping(entry, f"{key}.per_backbone.{bb}")
        c.known(entry, f"{key}.per_backbone.{bb}", PER_BACKBONE_KEYS)
        merged = {k: v for k, v in raw.items() if k != "per_backbone"}
        merged.update({k: v for k, v in entry.items() if k not in ("options", "deviations")})
        merged["options"] = {**(raw.get("options") or {}), **c.mapping(entry.get("options") or {},
                                                                        f"{key}.per_backbone.{bb}.options")}
        merged["deviations"] = {**(raw.get("deviations") or {}), **(entry.get("deviations") or {})}
        t.variants[bb] = _load_task(c, merged, i, data, backbones, variant=bb)
    return t


def parse_spec(raw: Any, file: str | Path) -> Spec:
    """A checked :class:`Spec` from the parsed YAML ``raw`` of ``file``."""
    c = _Checker(Path(file))
    raw = c.mapping(raw, "")
    c.known(raw, "", ("name", "data", "backbones", "tasks", "seeds", "reference", "gpus"),
            required=("name", "data", "backbones", "tasks"))
    gpus = raw.get("gpus", 1)
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        c.fail("gpus", f"expected a positive integer (processes the spec is written for), got {gpus!r}")
    name = raw["name"]
    if not isinstance(name, str) or not NAME.match(name):
        c.fail("name", f"{name!r} is not a usable name (letters, digits, '_', '.', '-')")
    data = _load_data(c, raw["data"])
    if not isinstance(raw["backbones"], list) or not raw["backbones"]:
        c.fail("backbones", "expected a non-empty list of {name, pretrain | checkpoint}")
    backbones = [_load_backbone(c, b, i, data) for i, b in enumerate(raw["backbones"])]
    seen: set[str] = set()
    for i, b in enumerate(backbones):
        if b.name in seen:
            c.fail(f"backbones[{i}].name", f"{b.name!r} is used twice")
        seen.add(b.name)
    if not isinstance(raw["tasks"], list) or not raw["tasks"]:
        c.fail("tasks", "expected a non-empty list of {name, kind, ...}")
    tasks = [_load_task(c, t, i, data, [b.name for b in backbones]) for i, t in enumerate(raw["tasks"])]
    seen = set()
    for i, t in enumerate(tasks):
        if t.name in seen:
            c.fail(f"tasks[{i}].name", f"{t.name!r} is used twice")
        seen.add(t.name)
    seeds = c.seeds(raw.get("seeds", [0]), "seeds")
    reference = raw.get("reference", [])
    reference = [reference] if isinstance(reference, str) else reference
    if not isinstance(reference, list) or not all(isinstance(r, str) for r in reference):
        c.fail("reference", f"expected a list of backbone names, got {reference!r}")
    unknown = [r for r in reference if r not in {b.name for b in backbones}]
    if unknown:
        c.fail("reference", f"{unknown} are not backbones of this spec; defined: {[b.name for b in backbones]}")
    spec = Spec(name=name, file=Path(file), data=data, backbones=backbones, tasks=tasks, seeds=seeds,
                reference=list(reference), gpus=gpus)
    check_references(c, spec)
    return spec
