"""mmengine checkpoints load with weights_only=True after the allow-list, and nothing more does."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("mmengine")

from mmengine.logging import HistoryBuffer, MessageHub  # noqa: E402

from droppos.transfer.segmentation.safe_load import allow_mmengine_checkpoints, history_buffer_getattr  # noqa: E402


def _mmengine_like_checkpoint(path):
    """What mmengine's Runner.save_checkpoint writes: meta, weights and the MessageHub state."""
    hub = MessageHub.get_instance("droppos-test-safe-load")
    for i in range(3):
        hub.update_scalar("train/loss", 1.0 / (i + 1))
        hub.update_scalar("train/lr", np.float32(1e-4))
    hub.update_info("eta", np.float64(12.5))
    hub.update_info("iter", 3)
    torch.save({"meta": {"iter": 3, "cfg": "model = dict()", "dataset_meta": {"classes": ("a", "b")}},
                "state_dict": {"w": torch.ones(2)}, "message_hub": hub.state_dict(),
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}}, path)


def test_mmengine_checkpoint_needs_exactly_the_allow_listed_globals(tmp_path):
    path = tmp_path / "iter_3.pth"
    _mmengine_like_checkpoint(path)
    registered = torch.serialization.get_safe_globals()  # other tests may have allow-listed already
    torch.serialization.clear_safe_globals()
    try:
        needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    finally:
        torch.serialization.add_safe_globals(registered)
    assert "mmengine.logging.history_buffer.HistoryBuffer" in needed  # why the allow-list exists
    allowed = set()
    for entry in allow_mmengine_checkpoints():
        obj, name = entry if isinstance(entry, tuple) else (entry, f"{entry.__module__}.{entry.__qualname__}")
        allowed.add(name)
    assert needed <= allowed, needed - allowed
    ckpt = torch.load(path)  # weights_only=True, the default
    hub = ckpt["message_hub"]
    assert isinstance(hub["log_scalars"]["train/loss"], HistoryBuffer)
    assert hub["log_scalars"]["train/loss"].mean() == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert hub["runtime_info"]["eta"] == 12.5
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2))


class _Evil:
    def __reduce__(self):
        return getattr, (HistoryBuffer, "register_statistics")


class _EvilOther:
    def __reduce__(self):
        return getattr, (np.ndarray, "tofile")


@pytest.mark.parametrize("payload", [_Evil(), _EvilOther()], ids=["other-method", "other-class"])
def test_getattr_is_restricted_to_history_buffer_statistics(tmp_path, payload):
    allow_mmengine_checkpoints()
    path = tmp_path / "evil.pth"
    torch.save({"x": payload}, path)
    with pytest.raises(pickle.UnpicklingError, match="refusing getattr"):
        torch.load(path)
    assert history_buffer_getattr(HistoryBuffer, "mean") is HistoryBuffer.mean


def test_arbitrary_globals_stay_refused(tmp_path):
    allow_mmengine_checkpoints()
    path = tmp_path / "ns.pth"
    import argparse

    torch.save({"args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(pickle.UnpicklingError, match="Namespace"):
        torch.load(path)
