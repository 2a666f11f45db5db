"""``droppos bench``: plan and run a backbones x tasks x seeds benchmark from a YAML spec.

Modules: ``spec`` (format and checks), ``plan`` (runs, folders, dependencies), ``commands``
(each run's ``droppos`` command line and multi-GPU launch), ``state`` (done / partial / failed,
``run.json``), ``backbones`` (backbone records), ``local`` (this machine), ``slurm`` (submitit),
``table`` (the dry-run table), ``main`` (the CLI). Shipped specs: ``specs/smoke.yaml``,
``specs/paper.yaml``.
"""
