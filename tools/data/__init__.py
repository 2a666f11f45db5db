"""Embedded default datasets built from the Fashion-MNIST IDX files (``droppos data``).

Modules, one job each: ``idx`` (read/validate IDX, load Fashion-MNIST), ``imagefolder``
(ImageFolder tree), ``canvas`` (scenes of pasted items), ``polygons`` (exact mask polygons),
``coco`` (COCO instances + ``validate_coco``), ``ade20k`` (ADE20K layout + ``validate_ade20k``),
``output`` (atomic dataset folders, ``dataset.json``), ``main`` (the CLI).
"""
