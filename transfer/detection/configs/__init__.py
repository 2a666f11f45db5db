"""detectron2 LazyConfigs of the ViTDet recipes (load them with ``LazyConfig.load``, not import)."""
