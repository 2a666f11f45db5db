"""The spec's schema: its types (data, backbones, tasks), its vocabulary and its error (see :mod:`droppos.bench.spec`)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from droppos.backbones.options import BackboneOptions
from droppos.errors import UserError
from droppos.runs.tasks import protocols, spec_kinds

DATA_KINDS = ("imagefolder", "coco", "ade20k")
TASK_KINDS = spec_kinds()  # spec task kind -> the data kind it reads (the task registry's)
CLASSIFY_PROTOCOLS = protocols("classify")
PROBE_PROTOCOLS = protocols("probe")
#: `droppos data` flags per kind (besides --out, set by the bench)
DATA_BUILD_KEYS = {
    "imagefolder": ("source", "seed", "size", "mode", "train_per_class", "val_per_class"),
    "coco": ("source", "seed", "canvas", "train_images", "val_images", "min_items", "max_items"),
    "ade20k": ("source", "seed", "canvas", "train_images", "val_images", "min_items", "max_items"),
}
#: a checkpoint backbone's keys in a spec -> the BackboneOptions field each one sets (``name`` is the row's name)
SPEC_BACKBONE_KEYS = {"checkpoint": "backbone", "from": "source_format", "trust_pickle": "trust_pickle", "arch": "arch",
                      "part": "part", "method": "method", "epochs": "pretrain_epochs", "pretrained": "pretrained"}
#: classify/probe flags the bench sets itself, with where they come from
BENCH_SET = {**{f.name: "the backbone" for f in dataclasses.fields(BackboneOptions)},
             "data": "the task's 'data'", "output": "the run folder", "seed": "'seeds'"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED = {"data", "results", "pretrain"}


class SpecError(UserError):
    """A problem in a spec file; the message names the file and the key."""


@dataclass
class DataSpec:
    name: str
    kind: str  # imagefolder | coco | ade20k
    path: str
    build: dict | None  # `droppos data` options, or None: never build (must exist)
    dataset: str = ""  # name in metrics.json ('' = the engine's own)


@dataclass
class BackboneSpec:
    name: str  # the backbone's name: its row in the table (--name of every run)
    pretrain: dict | None = None  # PretrainConfig fields (data: a data name or a path)
    source: BackboneOptions | None = None  # a checkpoint backbone: the backbone flags of every command
    recipe: str | None = None  # pretraining: the published recipe it follows (recipe card)
    deviations: dict = field(default_factory=dict)  # field -> why it deliberately differs from the recipe
    pretrain_seeds: list[int] | None = None  # several pretrainings of one recipe: rows NAME@pt<seed>

    def per_pretraining(self) -> list["BackboneSpec"]:
        """This backbone once per pretraining seed (``NAME@pt<seed>``, its pretraining's ``seed``); itself
        without ``pretrain_seeds``."""
        if not self.pretrain_seeds:
            return [self]
        return [dataclasses.replace(self, name=f"{self.name}{PRETRAIN_SEED_MARK}{s}", pretrain={**self.pretrain, "seed": s},
                                    pretrain_seeds=None) for s in self.pretrain_seeds]


#: ``droppos@pt1``: the row of one pretraining seed; ``droppos results`` pools ``NAME@pt*`` into row NAME
PRETRAIN_SEED_MARK = "@pt"


@dataclass
class TaskSpec:
    name: str
    kind: str  # classify | detect | segment | probe
    data: str  # a DataSpec name
    protocol: str = ""  # classify/probe
    config: str = ""  # detect/segment: shipped config name or file
    options: dict = field(default_factory=dict)
    schedule: dict | None = None
    seeds: list[int] | None = None
    backbones: list[str] | None = None
    needs: list[str] = field(default_factory=list)
    recipe: str | None = None  # the published recipe it follows (recipe card)
    deviations: dict = field(default_factory=dict)  # field -> why it deliberately differs from the recipe
    variants: dict = field(default_factory=dict)  # backbone name -> this task as run for it (per_backbone)

    def for_backbone(self, name: str) -> "TaskSpec":
        """The task as run for backbone ``name`` (its ``per_backbone`` entry applied)."""
        return self.variants.get(name, self)


@dataclass
class Spec:
    name: str
    file: Path
    data: dict[str, DataSpec]
    backbones: list[BackboneSpec]
    tasks: list[TaskSpec]
    seeds: list[int]
    reference: list[str] = field(default_factory=list)  # backbone names the delta columns are taken against
    gpus: int = 1  # processes the spec is written for (the recipe card's effective batches)

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)

    def run_backbones(self) -> list[BackboneSpec]:
        """The backbones the runs are made of: one per pretraining seed (``NAME@pt<seed>``) where a backbone has
        ``pretrain_seeds``."""
        return [b for bb in self.backbones for b in bb.per_pretraining()]
