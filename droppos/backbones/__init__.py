"""The one backbone layer: how a backbone is named, read, built and loaded into each engine.

* :mod:`.options`: the command-line vocabulary (``--backbone --from --arch --part --trust-pickle
  --name --method --pretrain-epochs``) shared by every command that takes a backbone;
* :mod:`droppos.backbones.readers` / :mod:`droppos.backbones.source`: the readers (every
  release layout into this project's ViT encoder names, with a key report);
* :mod:`.init`: the one init path into an engine (resolve, convert, strict load, load report,
  ``init.json``); the engines' adapters only describe their key names and configs;
* :mod:`.generic`: any architecture (``timm:<model>[:<weights>]``, plug-ins) through timm's contract.

``register(name, builder)`` makes ``--backbone name:<weights>`` build ``builder(**kwargs)``.
"""


def register(name: str, builder) -> None:
    """Register a plug-in backbone (see :func:`droppos.backbones.generic.register`)."""
    from .generic import register as _register

    _register(name, builder)
