"""The backbone record (``metrics.json``'s ``backbone``) of each spec backbone, for ``run.json``.

A planned run's record must be the one its engine will write, so that a missing or failed run
lands in the same row of the results table as the finished ones: a pretraining gets
``backbone_record(method, arch, epochs)`` like the pretraining engine; a checkpoint is read the
way the engines read it (:meth:`droppos.backbones.options.BackboneOptions.read`: any release
layout, ``timm:`` and plug-in sources). A checkpoint that
cannot be read yet (e.g. not downloaded) gets a placeholder named after the spec backbone; its
runs will fail and say why.
"""

from __future__ import annotations

from pathlib import Path

from .spec import BackboneSpec


def backbone_record_of(bb: BackboneSpec, out: Path) -> tuple[dict, str | None]:
    """``(record, problem)``: the record, and why it is a placeholder (None when exact)."""
    from droppos.utils.metrics import backbone_record

    if bb.pretrain is not None:
        from droppos.models.vit import vit_arch_args
        from droppos.pretrain.config import PretrainConfig

        cfg = PretrainConfig(**{k: v for k, v in bb.pretrain.items() if k != "data"})
        arch = vit_arch_args(cfg.model, patch_size=cfg.patch_size, img_size=cfg.img_size)
        return backbone_record(cfg.method, arch, cfg.epochs, source=str(out / bb.name / "pretrain" / "encoder.pth"),
                               id=bb.name), None
    try:
        return dict(bb.source.read().backbone), None  # the one way every engine reads a backbone
    except (ValueError, FileNotFoundError, OSError) as e:
        return {"id": bb.name, "method": bb.source.method or "unknown", "arch": "unknown",
                "epochs": bb.source.pretrain_epochs, "source": bb.source.backbone}, str(e)


def backbone_records(backbones: list[BackboneSpec], out: Path) -> tuple[dict[str, dict], list[str]]:
    """Records by spec backbone name, and a warning per placeholder."""
    records, warnings = {}, []
    for bb in backbones:
        records[bb.name], problem = backbone_record_of(bb, out)
        if problem:
            warnings.append(f"backbone {bb.name}: {problem}")
    return records, warnings
