"""``droppos bench SPEC --recipe-card``: each run's resolved settings beside the published recipe it names.

For every pretraining backbone and every task with a ``recipe:``, one table: field, this spec's
value (the engine's defaults, the spec's options, the loaded detection/segmentation config with
its overrides), the published value, its source, and ``same`` / ``differs (deliberate: why)`` /
``differs (not declared)``. Where official sources disagree (the DropPos pretraining batch: the paper,
PRETRAIN.md and the scripts), each has its row and the spec must name the one it follows and why
(``deviations:``), or the field counts as undeclared. Backbones that run a task the same way share its table. Tasks without
a published recipe (k-NN, the probes) are listed as this project's protocols.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .recipes import RECIPES, Recipe
from .spec import Spec, TaskSpec

SAME, DELIBERATE, UNDECLARED = "same", "differs (deliberate: {})", "differs (not declared)"
#: a field whose official sources disagree: the spec names the one it follows and why
CHOSEN, UNCHOSEN = "sources disagree; follows {} (declared: {})", "sources disagree (choice not declared)"


@dataclass
class Row:
    field: str
    ours: Any
    published: Any
    source: str
    verdict: str
    others: list = field(default_factory=list)  # [value, source] of the official sources that disagree


@dataclass
class Section:
    task: str
    backbones: list[str]
    recipe: Recipe
    rows: list[Row] = field(default_factory=list)

    @property
    def undeclared(self) -> list[Row]:
        return [r for r in self.rows if r.verdict in (UNDECLARED, UNCHOSEN)]


def _norm(v):
    if isinstance(v, (tuple, list)):
        return [_norm(x) for x in v]
    return v


def equal(a, b) -> bool:
    a, b = _norm(a), _norm(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def dotted(cfg, key: str):
    """``a.b.0.c`` in a (Lazy/mmengine) config; KeyError when absent."""
    node = cfg
    for part in key.split("."):
        if isinstance(node, (list, tuple)):
            node = node[int(part)]
        elif hasattr(node, "get") and part in node:
            node = node[part]
        else:
            raise KeyError(key)
    return node


# ------------------------------------------------------------------ resolved settings of one run
def pretrain_values(pt: dict, gpus: int) -> dict:
    from droppos.pretrain.config import PretrainConfig

    cfg = PretrainConfig(**{k: v for k, v in pt.items() if k != "data"})
    return {"effective_batch": cfg.batch_size * cfg.accum_iter * gpus, "decoder_depth": cfg.resolved_decoder_depth(),
            **{k: v for k, v in vars(cfg).items() if k != "decoder_depth"}}


def task_values(t: TaskSpec, gpus: int, keys: list[str]) -> dict:
    if t.kind == "classify":
        from droppos.transfer.classification.config import CONFIGS

        cfg = CONFIGS[t.protocol](**t.options)
        return {"effective_batch": cfg.batch_size * getattr(cfg, "accum_iter", 1) * gpus, **vars(cfg)}
    if t.kind == "detect":
        from detectron2.config import LazyConfig

        from droppos.transfer.detection.config import resolve_config_file

        from .commands import overrides

        cfg = LazyConfig.apply_overrides(LazyConfig.load(str(resolve_config_file(t.config))), overrides(t.options))
        values = {"effective_batch": cfg.dataloader.train.total_batch_size}
    else:
        from droppos.transfer.segmentation.config import load_config

        cfg = load_config(t.config, dict(t.options))
        values = {"effective_batch": cfg.train_dataloader.batch_size * gpus}
    for k in keys:
        if k not in values:
            try:
                values[k] = dotted(cfg, k)
            except (KeyError, IndexError, ValueError):
                values[k] = "(not set)"
    return values


def compare(recipe: Recipe, ours: dict, deviations: dict) -> list[Row]:
    rows = []
    for name, pub in recipe.fields.items():
        value = ours.get(name, "(not set)")
        followed = [i for i, p in enumerate(pub.all()) if equal(value, p.value)]
        if pub.others and followed and name in deviations:
            verdict = CHOSEN.format("the first source" if followed[0] == 0 else f"other source {followed[0]}",
                                    deviations[name])
        elif pub.others and followed:
            verdict = UNCHOSEN
        elif followed:
            verdict = SAME
        elif name in deviations:
            verdict = DELIBERATE.format(deviations[name])
        else:
            verdict = UNDECLARED
        rows.append(Row(name, _norm(value), _norm(pub.value), pub.source, verdict,
                        [[_norm(o.value), o.source] for o in pub.others]))
    return rows


def build_card(spec: Spec) -> tuple[list[Section], list[str]]:
    """Sections of the card, and the names of the tasks without a published recipe."""
    sections: list[Section] = []
    for bb in spec.backbones:
        if bb.pretrain is not None and bb.recipe:
            r = RECIPES[bb.recipe]
            sections.append(Section("pretrain", [bb.name], r, compare(r, pretrain_values(bb.pretrain, spec.gpus),
                                                                        bb.deviations)))
    without: list[str] = []
    for t in spec.tasks:
        names = t.backbones or [b.name for b in spec.backbones]
        groups: dict[str, tuple[TaskSpec, list[str]]] = {}
        for n in names:  # backbones that run the task the same way share a table
            tv = t.for_backbone(n)
            key = json.dumps([tv.config, tv.recipe, tv.options, tv.deviations], sort_keys=True, default=str)
            groups.setdefault(key, (tv, []))[1].append(n)
        for tv, bbs in groups.values():
            if not tv.recipe:
                if t.name not in without:
                    without.append(t.name)
                continue
            r = RECIPES[tv.recipe]
            ours = task_values(tv, spec.gpus, list(r.fields))
            sections.append(Section(t.name, bbs, r, compare(r, ours, tv.deviations)))
    return sections, without


# ------------------------------------------------------------------ output
def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v).replace("|", "\\|")


def to_markdown(spec: Spec, sections: list[Section], without: list[str]) -> str:
    lines = [f"# Recipe card: {spec.name}", "",
             f"Spec `{spec.file.name}`, written for {spec.gpus} process(es): effective batch = per-process batch "
             f"x accumulation x {spec.gpus} (detection: detectron2's total batch).", ""]
    for s in sections:
        lines += [f"## {s.task}: {', '.join(s.backbones)} ({s.recipe.name})", "", s.recipe.title, "",
                  "| field | ours | published | source | |", "|---|---|---|---|---|"]
        for r in s.rows:
            lines.append(f"| {r.field} | {_cell(r.ours)} | {_cell(r.published)} | {_cell(r.source)} | {r.verdict} |")
            lines += [f"| {r.field} (other source {i}) | | {_cell(v)} | {_cell(src)} | |"
                      for i, (v, src) in enumerate(r.others, 1)]
        if s.recipe.note:
            lines += ["", f"Note: {s.recipe.note}"]
        lines.append("")
    if without:
        lines += [f"Without a published recipe (this project's protocols): {', '.join(without)}.", ""]
    n = sum(len(s.undeclared) for s in sections)
    if not sections:
        lines.append("No run of this spec names a published recipe (`recipe:`): nothing to compare.")
    else:
        lines.append(f"{n} field(s) differ without a declared reason." if n else
                     "Every field equals its source, except the deliberate differences and declared choices named above.")
    return "\n".join(lines) + "\n"


def to_json(sections: list[Section], without: list[str]) -> dict:
    return {"sections": [{"task": s.task, "backbones": s.backbones, "recipe": s.recipe.name,
                          "rows": [vars(r) for r in s.rows]} for s in sections], "without_recipe": without}


def write_card(spec: Spec, out: Path) -> tuple[Path, int]:
    """Write ``OUT/recipe_card.md`` and ``.json``; returns (markdown path, number of undeclared differences)."""
    sections, without = build_card(spec)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "recipe_card.md"
    md.write_text(to_markdown(spec, sections, without))
    (out / "recipe_card.json").write_text(json.dumps(to_json(sections, without), indent=1, default=str) + "\n")
    return md, sum(len(s.undeclared) for s in sections)
