"""``droppos convert``: the command (:mod:`.main`); the work is in :mod:`droppos.backbones.convert`."""
