"""detectron2's checkpointer, reading files through the project's one safe loader.

``DetectionCheckpointer`` unpickles a ``.pkl`` with ``pickle.load`` and a ``.pth`` with a full
``torch.load``: a file named by a run folder's ``last_checkpoint`` could run code on ``--resume`` or
``--eval-only``. :func:`checkpointer` returns the same checkpointer whose ``_load_file`` goes through
:func:`droppos.utils.checkpoint.safe_load` (tensors, plain containers, numpy arrays; anything else
needs ``--trust-pickle``), keeping detectron2's own handling of what it read (``.pkl`` files are
model-zoo weights matched with its heuristics).
"""

from __future__ import annotations


def checkpointer(model, save_dir: str = "", trust_pickle: bool = False, **checkpointables):
    """A ``DetectionCheckpointer`` that reads files safely (see the module docstring)."""
    from detectron2.checkpoint import DetectionCheckpointer

    from droppos.utils.checkpoint import safe_load

    class SafeCheckpointer(DetectionCheckpointer):
        def _load_file(self, filename: str) -> dict:
            obj = safe_load(filename, trust_pickle=trust_pickle)
            if filename.endswith(".pkl"):  # model-zoo weights, as DetectionCheckpointer reads them
                model = obj.get("model", obj) if isinstance(obj, dict) else obj
                return {"model": model, "__author__": obj.get("__author__", "unknown") if isinstance(obj, dict)
                        else "unknown", "matching_heuristics": True}
            return obj if isinstance(obj, dict) and "model" in obj else {"model": obj}

    return SafeCheckpointer(model, save_dir, **checkpointables)
