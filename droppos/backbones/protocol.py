"""The one contract every backbone keeps, whatever it is made of (:class:`Backbone`).

Two kinds implement it: :class:`~.source.ViTBackbone` (this project's ViT, read from any release
layout by :mod:`.readers`, converted into each engine's names by :mod:`.targets`) and
:class:`~.generic.GenericBackbone` (any model that keeps timm's contract: ``timm:<model>[:<weights>]``,
plug-ins). The tasks use only this contract; what differs per kind is each class's own method, never
a test on the kind.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .arch import ViTArch


@runtime_checkable
class Backbone(Protocol):
    """A backbone read from its source: its architecture, weights, identity and how to build it.

    Attributes:
        arch: a typed architecture (``ViTArch`` or ``GenericArch``), with ``img_size`` and ``to_dict()``.
        meta: what the source says of itself (``method``, ``epochs``, ``source``, ``format``, ...).
        notes: what was inferred rather than read, for the load report.
        dropped: (key, reason) of every weight of the source left out.
        head: the source's classifier head (``{"weight", "bias"}``) where it has one, else {}.
        backbone: its record in ``metrics.json`` (``droppos.utils.metrics.backbone_record``).
    """

    arch: ViTArch | object
    meta: dict
    notes: list[str]
    dropped: list[tuple[str, str]]
    head: dict
    backbone: dict

    def encoder(self, img_size: int | None = None, **kwargs) -> torch.nn.Module:
        """The feature extractor with these weights, for inputs of ``img_size`` (None: its own size)."""
        ...

    def classifier(self, img_size: int, num_classes: int, global_pool: str = "avg", drop_path: float = 0.0,
                   train_pos_embed: bool = True, head_init: str = "new") -> torch.nn.Module:
        """A classifier of ``num_classes`` on these weights (fine-tuning's model)."""
        ...

    def input_size(self, requested: int | None = None) -> int:
        """The input size a run uses: ``requested``, checked, or the backbone's own."""
        ...
