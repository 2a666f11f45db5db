"""The one command-line vocabulary for a backbone, shared by every command that takes one.

``BackboneOptions`` is a dataclass config (:mod:`droppos.utils.config`): ``classify`` and ``probe``
inherit it into their configs, ``detect``, ``segment`` and ``convert`` add its flags with
:func:`add_backbone_arguments`. The flags::

    --backbone SRC          hf:<org>/<repo>[@rev] (a transformers ViT / ViTMAE / DINOv2 on the Hugging Face hub,
                            through its cache), a model folder (config.json + model.safetensors),
                            timm:<model>.<tag> (the tag's published weights), hf-hub:<org>/<repo> (timm's form),
                            a file any reader reads (see droppos.backbones.readers), timm:<model>[:<weights>]
                            (any architecture; no weights: a random init), <plugin>:<weights>, or
                            scratch:<size>_p<patch>_<img>[_s<seed>]  (detect/segment: also 'scratch',
                            the engine's own random init, or a file in the engine's own names)
    --from FMT              force the layout instead of recognising it
    --arch K=V,...          architecture fields the file does not store (num_heads=12, img_size=224x320)
    --part NET              teacher|student (DINO, iBOT), base|momentum (MoCo v3)
    --trust-pickle          allow arbitrary pickled objects (runs the file's code): trusted files only
    --allow-nonfinite       read NaN/Inf weights instead of refusing the file
    --name NAME             the backbone's name: its row in the results table (default: from the path)
    --method M              the pretraining method for the record (default: what the file says, else unknown)
    --pretrain-epochs N     the pretraining epochs for the record (``--epochs`` is the schedule of the run)

Old spellings are accepted with a note until the release that removes them (one table:
:data:`droppos.utils.config.DEPRECATED_FLAGS`): ``--init`` (detect, segment), ``--source-format``
(classify, probe, convert). ``--trust-pickle`` also takes ``true`` / ``false``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from droppos.errors import UserError
from droppos.utils.config import add_deprecated, opt, to_args

from .naming import SourceName, parse_source


@dataclass
class BackboneOptions:
    backbone: str = opt("", "the weights to start from: hf:<org>/<repo>[@rev] (a transformers ViT/ViTMAE/DINOv2 on the "
                            "Hugging Face hub), a model folder (config.json + model.safetensors), timm:<model>.<tag> "
                            "(the tag's published weights), hf-hub:<org>/<repo>, a checkpoint in any layout the "
                            "readers know (encoder.pth, official DropPos/MAE, DINO, iBOT, MoCo v3, DeiT, DINOv2, "
                            "Hugging Face, torchvision, AugReg .npz, timm, mmseg), scratch:<size>_p<patch>_<img>, "
                            "timm:<model>[:<weights>] (any architecture; without weights a random init) or "
                            "<plugin>:<weights> (a registered class)", metavar="SRC")
    source_format: str | None = opt(None, "force the backbone file's layout instead of recognising it",
                                    flag="--from", aliases=("--source-format",), metavar="FMT")
    arch: str | None = opt(None, "architecture fields the file does not store, e.g. num_heads=12 or img_size=224x320",
                           metavar="K=V,...")
    part: str | None = opt(None, "which network of a two-network checkpoint: teacher|student (DINO, iBOT), "
                                 "base|momentum (MoCo v3); default teacher / base", metavar="NET")
    trust_pickle: bool = opt(False, "allow arbitrary pickled objects in the backbone file: unpickling runs its code, "
                                    "only for files you trust (plain containers and argparse args need no trust)",
                             switch=True)
    allow_nonfinite: bool = opt(False, "read a backbone file with NaN/Inf weights instead of refusing it", switch=True)
    pretrained: bool = opt(False, "timm:<model> without a tag: load its default published weights (timm's pretrained "
                                  "loader, the Hugging Face cache) instead of a random init", switch=True)
    name: str | None = opt(None, "the backbone's name, its row in the results table (default: a readable id of the "
                                 "source path)")
    method: str | None = opt(None, "pretraining method for the backbone record (default: what the file says, "
                                   "else 'unknown')")
    pretrain_epochs: int | None = opt(None, "pretraining epochs for the backbone record (default: what the file says)",
                                      metavar="N", ge=0)

    @property
    def source(self) -> SourceName:
        """What ``--backbone`` names (:func:`droppos.backbones.naming.parse_source`)."""
        return parse_source(self.backbone)

    def args(self) -> list[str]:
        """These options as the flags of every command (``--backbone SRC --from FMT ...``; defaults left out)."""
        return to_args(self)

    def read(self, **overrides):
        """The backbone these options name: a :class:`~droppos.backbones.source.ViTBackbone` (a ViT in
        any release layout), or a :class:`~droppos.backbones.generic.GenericBackbone` for
        ``timm:<model>[:<weights>]`` and registered plug-ins."""
        from droppos.backbones.generic import load_generic
        from droppos.backbones.source import load_backbone

        if self.source.generic:
            for flag, value in (("--from", self.source_format), ("--arch", self.arch), ("--part", self.part)):
                if value is not None:
                    raise UserError(f"{flag} applies to checkpoint files, not to {self.source.prefix}: "
                                    "sources (the model name fixes the architecture)")
            return load_generic(self.backbone, trust_pickle=self.trust_pickle, allow_nonfinite=self.allow_nonfinite,
                                name=self.name, method=self.method, epochs=self.pretrain_epochs,
                                pretrained=self.pretrained)
        if self.pretrained:
            raise UserError(f"--pretrained applies to timm:<model> sources, not to {self.backbone} (a file or a model "
                            "folder holds its own weights)")

        kw = dict(fmt=self.source_format, trust_pickle=self.trust_pickle, arch=self.arch, part=self.part,
                  allow_nonfinite=self.allow_nonfinite, name=self.name, method=self.method,
                  epochs=self.pretrain_epochs)
        kw.update(overrides)
        return load_backbone(self.backbone, **kw)


def backbone_options(args: argparse.Namespace) -> BackboneOptions:
    """The :class:`BackboneOptions` of parsed arguments (unset flags keep their defaults)."""
    import dataclasses

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(BackboneOptions)
              if getattr(args, f.name, None) is not None}
    return BackboneOptions(**values)


def add_backbone_arguments(parser: argparse.ArgumentParser, extra_help: str = "", required: bool = False) -> None:
    """The backbone flags (module docstring) on an argparse parser; ``--init`` is an old alias of ``--backbone``."""
    from droppos.utils.config import add_dataclass_arguments

    add_dataclass_arguments(parser, BackboneOptions, title="backbone (the same flags in every command)",
                            extra_help={"backbone": extra_help}, required={"backbone"} if required else set())
    add_deprecated(parser, "--init", dest="backbone")
