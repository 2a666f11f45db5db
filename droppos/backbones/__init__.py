"""The one backbone layer: how a backbone is named, read, built and loaded into each engine (map: ARCHITECTURE.md).

* :mod:`.naming`: what a ``--backbone`` string names (:func:`.naming.parse_source`, the only reader of its syntax)
  and the registered plug-in names;
* :mod:`.options`: the command-line vocabulary (``--backbone --from --arch --part --trust-pickle --pretrained
  --name --method --pretrain-epochs``) shared by every command that takes a backbone;
* :mod:`.readers` / :mod:`.source` / :mod:`.hub`: every release layout, hub repository and model folder read
  into this project's ViT (:class:`.source.ViTBackbone`, a typed :class:`.arch.ViTArch`);
* :mod:`.generic`: any architecture (``timm:<model>[.<tag>][:<weights>]``, ``hf-hub:``, plug-ins) through timm's
  contract; both kinds keep :class:`.protocol.Backbone`;
* :mod:`.targets` / :mod:`.convert`: a ViT in detectron2's, mmseg's or timm's names, with one :class:`.report.KeyReport`;
* :mod:`.into_engine`: the path into detection and segmentation models (resolve, convert, strict load, ``init.json``);
  the engines' adapters only describe their key names and configs.

``register(name, builder)`` makes ``--backbone name:<weights>`` build ``builder(**kwargs)``.
"""


def register(name: str, builder) -> None:
    """Register a plug-in backbone (see :func:`droppos.backbones.naming.register`)."""
    from .naming import register as _register

    _register(name, builder)
