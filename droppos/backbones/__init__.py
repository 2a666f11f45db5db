"""The one backbone layer: how a backbone is named, read, built and loaded into each engine.

* :mod:`.options`: the command-line vocabulary (``--backbone --from --arch --part --trust-pickle
  --name --method --pretrain-epochs``) shared by every command that takes a backbone;
* :mod:`droppos.tools.convert.layouts` / :mod:`droppos.tools.convert.sources`: the readers (every
  release layout into this project's ViT encoder names, with a key report);
* :mod:`.init`: the one init path into an engine (resolve, convert, strict load, load report,
  ``init.json``); the engines' adapters only describe their key names and configs.
"""
