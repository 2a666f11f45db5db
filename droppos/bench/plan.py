"""The plan of a benchmark: every run a spec asks for, its folder, command and dependencies.

Layout under the output folder ``OUT``::

    OUT/<backbone>/pretrain/          pretraining run (backbones with ``pretrain:``)
    OUT/<backbone>/<task>/seed<k>/    one downstream run; run.json (the plan), bench.log, engine files
    OUT/data/<name>.log               log of a dataset build (the dataset goes to its spec path)
    OUT/results/                      the aggregator's tables and figure

Run ids mirror the folders: ``data/coco``, ``droppos/pretrain``, ``droppos/finetune/seed0``. A
downstream run depends on its backbone's pretraining, its dataset's build and any task it names
(``{task:NAME}`` in options, or ``needs``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from droppos.backbones.options import BackboneOptions
from droppos.runs.tasks import TaskKind, task_kind

from .commands import TASK_ARGS, data_args, pretrain_args
from .spec import PLACEHOLDER, BackboneSpec, DataSpec, Spec, TaskSpec, task_references


@dataclass
class PlannedRun:
    """One unit of work: a dataset build, a pretraining or a downstream run."""

    id: str
    kind: str  # data | pretrain | classify | detect | segment | probe
    folder: Path  # run folder (data: the dataset folder)
    args: list[str]  # arguments of `droppos`
    log: Path
    deps: list[str] = field(default_factory=list)
    backbone: str = ""  # spec backbone name
    task: str = ""  # spec task name
    seed: int | None = None
    plan: dict = field(default_factory=dict)  # run.json fields (without the backbone record)
    buildable: bool = True  # data: may be built when missing

    @property
    def entry(self) -> TaskKind:
        """The task registry's entry of this run (launcher, resume flag, schedule and batch keys)."""
        return task_kind(self.kind, self.args[1] if self.kind in ("classify", "probe") else None)

    @property
    def command(self) -> str:
        import shlex

        return "droppos " + shlex.join(self.args)


def backbone_source(bb: BackboneSpec, out: Path) -> BackboneOptions:
    """The backbone options of the downstream runs of ``bb``: its pretraining's encoder, or the spec's."""
    if bb.pretrain is not None:
        return BackboneOptions(backbone=str(out / bb.name / "pretrain" / "encoder.pth"), source_format="encoder",
                               name=bb.name)
    return bb.source


def default_dataset_name(d: DataSpec) -> str:
    """What an engine will write as ``dataset`` for ``d`` (the spec's ``dataset`` wins)."""
    if d.dataset:
        return d.dataset
    if d.build is not None:
        return "fmnist"  # `droppos data` builds from Fashion-MNIST
    return Path(d.path).name if d.kind == "imagefolder" else d.kind


def derive_schedule(t: TaskSpec) -> dict | None:
    """``{"epochs": N}`` / ``{"iters": N}`` of a task: the spec's, else from its options (the registry's
    schedule option) and, for classification, its config's default."""
    if t.schedule:
        return dict(t.schedule)
    entry = task_kind(t.kind, t.protocol)
    if entry.schedule_unit is None:
        return None
    if entry.schedule_option in t.options:
        return {entry.schedule_unit: int(t.options[entry.schedule_option])}
    if t.kind == "classify":
        from droppos.transfer.classification.config import CONFIGS

        return {entry.schedule_unit: int(getattr(CONFIGS[t.protocol](), entry.schedule_option))}
    return None


def _substitute(options: dict, out: Path, spec: Spec, bb: str, seed: int, src: BackboneOptions, folder: Path) -> dict:
    def sub(s):
        if not isinstance(s, str):
            return s

        def one(m: re.Match) -> str:
            if m.group(1) == "task":
                return str(out / bb / m.group(2) / f"seed{seed}")
            if m.group(1) == "data":
                return spec.data[m.group(2)].path
            return src.backbone if m.group(3) == "backbone" else str(folder)

        return PLACEHOLDER.sub(one, s)

    return {k: [sub(x) for x in v] if isinstance(v, list) else sub(v) for k, v in options.items()}


def _data_used(spec: Spec, t: TaskSpec) -> list[str]:
    names = [t.data]
    for v in t.options.values():
        for s in (v if isinstance(v, list) else [v]):
            if isinstance(s, str):
                names += [m.group(2) for m in PLACEHOLDER.finditer(s) if m.group(1) == "data"]
    return list(dict.fromkeys(names))


def build_plan(spec: Spec, out: str | Path) -> list[PlannedRun]:
    """Every run of ``spec`` under ``out``, in an order where each run comes after what it needs."""
    out = Path(out)
    runs: list[PlannedRun] = []
    used_data: list[str] = []
    for bb in spec.backbones:
        if bb.pretrain and bb.pretrain["data"] in spec.data:
            used_data.append(bb.pretrain["data"])
    for t in spec.tasks:
        for tv in (t, *t.variants.values()):
            used_data += _data_used(spec, tv)
    for name in dict.fromkeys(used_data):
        d = spec.data[name]
        runs.append(PlannedRun(id=f"data/{name}", kind="data", folder=Path(d.path), args=data_args(d),
                        log=out / "data" / f"{name}.log", buildable=d.build is not None))
    data_run = {r.id.split("/", 1)[1]: r.id for r in runs}

    ordered = _task_order(spec)
    for base in spec.backbones:
        for bb in base.per_pretraining():
            runs += _backbone_runs(spec, base.name, bb, out, ordered, data_run)
    _check_deps(spec, runs)
    return runs


def _backbone_runs(spec: Spec, base: str, bb: BackboneSpec, out: Path, ordered: list[TaskSpec],
                   data_run: dict[str, str]) -> list[PlannedRun]:
    """The pretraining (if any) and the downstream runs of ``bb``; ``base``: its name in the spec (the tasks'
    ``backbones:`` and ``per_backbone:`` name it so, whatever its pretraining seed)."""
    from droppos.pretrain.config import PretrainConfig

    runs: list[PlannedRun] = []
    src = backbone_source(bb, out)
    pre: list[str] = []
    if bb.pretrain is not None:
        folder = out / bb.name / "pretrain"
        pt_data = bb.pretrain["data"]
        data_path = spec.data[pt_data].path if pt_data in spec.data else pt_data
        cfg = PretrainConfig(**{k: v for k, v in bb.pretrain.items() if k != "data"})
        plan = {"task": "pretrain", "protocol": cfg.method, "dataset": Path(data_path).name, "seed": cfg.seed,
                "schedule": {"epochs": cfg.epochs}}
        runs.append(PlannedRun(id=f"{bb.name}/pretrain", kind="pretrain", folder=folder,
                        args=pretrain_args(bb, folder, data_path), log=folder / "bench.log",
                        deps=[data_run[pt_data]] if pt_data in data_run else [], backbone=bb.name,
                        task="pretrain", seed=cfg.seed, plan=plan))
        pre = [f"{bb.name}/pretrain"]
    for t in ordered:
        if t.backbones is not None and base not in t.backbones:
            continue
        t = t.for_backbone(base)
        entry = task_kind(t.kind, t.protocol)
        task, protocol = entry.metrics_task, entry.protocol
        if t.kind == "segment":  # UperNet or a dense probe: the config says (read once per task)
            from droppos.transfer.segmentation.config import protocol_of

            protocol = protocol_of(t.config)
        d = spec.data[t.data]
        seeds = t.seeds if t.seeds is not None else spec.seeds
        for seed in (seeds if entry.seeded else seeds[:1]):  # a seed-free protocol runs once
            folder = out / bb.name / t.name / f"seed{seed}"
            options = _substitute(t.options, out, spec, bb.name, seed, src, folder)
            deps = pre + [data_run[n] for n in _data_used(spec, t)]
            deps += [f"{bb.name}/{ref}/seed{seed}" for ref in task_references(t)]
            plan = {"task": task, "protocol": protocol or t.protocol, "dataset": default_dataset_name(d),
                    "seed": seed, "schedule": derive_schedule(t)}
            runs.append(PlannedRun(id=f"{bb.name}/{t.name}/seed{seed}", kind=t.kind, folder=folder,
                            args=TASK_ARGS[t.kind](t, src, d, folder, seed, options), log=folder / "bench.log",
                            deps=deps, backbone=bb.name, task=t.name, seed=seed, plan=plan))
    return runs


def _task_order(spec: Spec) -> list[TaskSpec]:
    """Tasks in spec order, moved after the tasks they wait for."""
    done: list[str] = []
    pending = list(spec.tasks)
    while pending:  # the spec loader has refused cycles
        for t in pending:
            if all(r in done for r in task_references(t)):
                done.append(t.name)
                pending.remove(t)
                break
    return [spec.task(n) for n in done]


def _check_deps(spec: Spec, runs: list[PlannedRun]) -> None:
    from .spec import SpecError

    ids = {r.id for r in runs}
    for r in runs:
        missing = [d for d in r.deps if d not in ids]
        if missing:
            raise SpecError(f"{spec.file}: run {r.id} waits for {missing}, which this spec does not run "
                            "(a task named by {task:...}/needs must run on the same backbones and seeds)")


def select(runs: list[PlannedRun], patterns: list[str] | None) -> list[PlannedRun]:
    """The runs whose id matches one of the glob ``patterns`` (all when None), plus what they need."""
    if not patterns:
        return runs
    from fnmatch import fnmatchcase

    by_id = {r.id: r for r in runs}
    keep: set[str] = set()

    def add(rid: str) -> None:
        if rid not in keep:
            keep.add(rid)
            for d in by_id[rid].deps:
                add(d)

    for r in runs:
        if any(fnmatchcase(r.id, p) or fnmatchcase(r.id, p.rstrip("/") + "/*") for p in patterns):
            add(r.id)
    return [r for r in runs if r.id in keep]
