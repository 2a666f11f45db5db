"""DropPos Bench: pretrain ViTs with DropPos or MAE and transfer them to classification,
detection (detectron2 ViTDet) and segmentation (mmsegmentation UperNet).

Subpackages map to the repository's top-level folders: ``droppos.pretrain`` is ``pretrain/``,
``droppos.tools`` is ``tools/``, ``droppos.transfer`` is ``transfer/``, ``droppos.results`` is
``results/``. Shared pieces (the ViT encoder, config and checkpoint utilities, the distributed
set-up) live in this package itself.
"""

__version__ = "0.1.0"
