"""Detection transfer: ViTDet Mask R-CNN in detectron2 (``droppos detect``; configs in ``configs/``)."""
