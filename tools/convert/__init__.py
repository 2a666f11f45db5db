"""Checkpoint converters: any ViT source (this project, official DropPos/MAE, timm, scratch) to
timm, detectron2 (ViTDet) or mmsegmentation (MAE backbone) key names, with a key report.

    from droppos.tools.convert import load_backbone, convert_backbone
    bb = load_backbone("runs/pt/encoder.pth")             # Backbone: state_dict, arch, meta, ...
    sd, report = convert_backbone(bb, "detectron2", img_size=1024)

Modules: ``sources`` (reading and detecting formats), ``arch`` (architecture from shapes),
``targets`` (key mapping per framework), ``report`` (KeyReport), ``main`` (the CLI, ``convert``).
"""

from .main import ConversionError, convert, convert_backbone, save_converted
from .report import KeyReport
from .sources import FORMATS, Backbone, load_backbone
from .targets import TARGETS

__all__ = ["Backbone", "ConversionError", "FORMATS", "KeyReport", "TARGETS", "convert", "convert_backbone",
           "load_backbone", "save_converted"]
