"""The results aggregator: run folders in, one table out (``droppos results``).

``discover`` finds runs (our ``metrics.json``, else the engines' own logs), ``aggregate``
groups them by backbone and task with mean +- std and deltas, ``published`` holds the
literature numbers, and ``markdown``/``export``/``plot`` write results.md/.csv/.json/.png.
"""
