"""The benchmark spec: which data, which backbones, which tasks, which seeds. Loaded and checked.

A spec is a YAML file (``droppos/bench/specs/smoke.yaml`` is the commented example)::

    name: smoke                    # default output folder: runs/bench/<name>
    seeds: [0]                     # seeds of every downstream task
    data:                          # datasets by name; kind = the name unless given
      imagefolder: {path: data/fmnist, build: {size: 64}}    # built by `droppos data` when missing
      coco: {path: data/coco}                                 # build: {} (the builder's defaults)
      imagenet: {kind: imagefolder, path: /datasets/imagenet, build: false, dataset: imagenet}
    backbones:
      - name: droppos              # pretrained here, in OUT/droppos/pretrain
        pretrain: {method: droppos, model: tiny, patch_size: 8, img_size: 64, epochs: 8, data: imagefolder}
        pretrain_seeds: [0, 1, 2]  # optional: one pretraining per seed, OUT/droppos@pt<k>/..., rows droppos@pt<k>
                                   # that `droppos results` pools into row droppos (n = pretrainings)
      - name: scratch              # used as given: any source `droppos convert` reads
        checkpoint: scratch:tiny_p8_64
      - name: mae_official         # the name is the backbone's row in the table (--name of its runs)
        checkpoint: /ckpt/mae_pretrain_vit_base.pth
        method: mae                # optional, for the record: method, epochs (else what the file says)
        epochs: 1600
        from: deit                 # optional: the backbone flags --from, --arch, --part, trust_pickle
    reference: [mae_official]      # rows the delta columns are taken against (none by default)
    tasks:
      - {name: finetune, kind: classify, protocol: finetune, data: imagefolder, options: {epochs: 5}}
      - {name: det, kind: detect, config: mask_rcnn_vitdet_fmnist, data: coco, options: {train.max_iter: 30}}
      - {name: seg, kind: segment, config: upernet_vit_fmnist, data: ade20k, options: {train_cfg.max_iters: 40}}
      - {name: position, kind: probe, protocol: position, data: imagefolder}

A spec may start from another: ``extends: smoke`` (a shipped name or a path) takes that spec's
top-level keys, and this file's keys replace them (``specs/smoke3.yaml``: ``name`` and ``seeds``).

Task ``options`` are the flags of the engine's command (``epochs`` -> ``--epochs``) for
``classify``, ``probe`` and ``pretrain``; config overrides (``KEY=VALUE``) for ``detect`` and
``segment``. String values may name other folders: ``{data:NAME}`` (a dataset's path),
``{task:NAME}`` (the folder of task NAME for the same backbone and seed; the run then waits for
it), ``{backbone}`` (the backbone's weights), ``{run}`` (this run's folder). Optional per task:
``schedule`` (``{epochs: N}`` or ``{iters: N}``, written to run.json; derived from the options
when omitted), ``seeds`` (instead of the spec's; k-NN, whose result no seed changes, runs once with
the first and refuses a list of several), ``backbones`` (a subset of backbone names),
``needs`` (task names to wait for), ``per_backbone`` (``{NAME: {options, config, schedule, recipe,
deviations}}``: what differs for one backbone, e.g. its own published recipe; options are merged
over the task's), ``recipe`` and ``deviations`` (below). Relative paths are relative to the
working directory.

Recipe cards (``droppos bench SPEC --recipe-card``): ``recipe: NAME`` on a task, a ``per_backbone``
entry or a pretraining backbone names the published recipe it follows (:mod:`droppos.bench.recipes`);
``deviations: {field: why}`` names the differences that are deliberate; ``gpus: N`` (top level,
default 1) is the number of processes the spec is written for, from which the card derives each
effective batch.

:func:`load_spec` returns a checked :class:`Spec`; every problem is a :class:`SpecError` whose
message names the spec file and the key (``smoke.yaml: tasks[2].options.epochs: ...``).
"""

from __future__ import annotations

from pathlib import Path

from .extends import read_raw, resolve_spec_path, shipped_specs
from .graph import PLACEHOLDER, task_references
from .parse import parse_spec
from .schema import (BENCH_SET, CLASSIFY_PROTOCOLS, DATA_BUILD_KEYS, DATA_KINDS, PROBE_PROTOCOLS, TASK_KINDS,
                     BackboneSpec, DataSpec, Spec, SpecError, TaskSpec)

__all__ = ["BENCH_SET", "CLASSIFY_PROTOCOLS", "DATA_BUILD_KEYS", "DATA_KINDS", "PLACEHOLDER", "PROBE_PROTOCOLS",
           "TASK_KINDS", "BackboneSpec", "DataSpec", "Spec", "SpecError", "TaskSpec", "load_spec", "parse_spec",
           "resolve_spec_path", "shipped_specs", "task_references"]


def load_spec(file: str | Path) -> Spec:
    """Read and check a spec file; :class:`SpecError` names the file and the key of any problem."""
    file = Path(file)
    return parse_spec(read_raw(file), file)
