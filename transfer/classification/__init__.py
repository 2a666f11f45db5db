"""Classification transfer: fine-tuning, linear probing and k-NN of any backbone (``droppos classify``).

Modules: ``config`` (one dataclass per protocol), ``data`` (ImageFolder checks, timm transforms,
loaders), ``features`` (``extract_features``, reused by the probes), ``loop`` (training epoch and
evaluation), ``common`` (run folder, resume, metrics.json), ``finetune``, ``linear``, ``knn``,
``classifier`` (the fine-tuned classifier file), ``main`` (the CLI).
"""
