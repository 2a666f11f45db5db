"""The mmcv.ops stand-in: mmseg imports with mmcv-lite, point_sample is right, other ops refuse."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("mmseg")

from droppos.transfer.segmentation import mmcv_ops  # noqa: E402


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "ignore", "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(mmcv_ops.full_mmcv_available(), reason="full mmcv installed: the shim is never used")
def test_shim_makes_mmseg_importable_and_refuses_other_ops():
    r = _python("""
        try:
            import mmcv.ops
            raise SystemExit("mmcv.ops imported without the shim: is mmcv-lite really missing its ops?")
        except ModuleNotFoundError as e:
            assert "mmcv._ext" in str(e), e
        from droppos.transfer.segmentation.mmcv_ops import ensure_mmcv_ops, point_sample
        assert ensure_mmcv_ops() == "shim" and ensure_mmcv_ops() == "shim"
        import mmseg.models, mmcv.ops
        from mmseg.models.decode_heads import cc_head, psa_head
        assert cc_head.CrissCrossAttention is None and psa_head.PSAMask is None
        assert mmcv.ops.point_sample is point_sample
        try:
            from mmcv.ops import RoIAlign
            raise SystemExit("RoIAlign imported")
        except ModuleNotFoundError as e:
            assert "RoIAlign" in str(e) and "mmcv-lite" in str(e)
        from mmcv.ops import sigmoid_focal_loss  # mmseg imports it unguarded; calling it must fail
        try:
            sigmoid_focal_loss(None, None)
            raise SystemExit("sigmoid_focal_loss ran")
        except ModuleNotFoundError:
            pass
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def test_shim_does_nothing_with_full_mmcv():
    r = _python("""
        import sys
        from droppos.transfer.segmentation import mmcv_ops
        mmcv_ops.full_mmcv_available = lambda: True  # pretend mmcv._ext exists
        assert mmcv_ops.ensure_mmcv_ops() == "full"
        assert "mmcv.ops" not in sys.modules
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def test_point_sample_reads_pixel_centres_and_interpolates():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7)
    ij = torch.tensor([[0, 0], [4, 6], [2, 3]])
    centres = torch.stack([(ij[:, 1] + 0.5) / 7, (ij[:, 0] + 0.5) / 5], dim=-1)  # (x, y) in [0, 1]
    out = mmcv_ops.point_sample(x, centres.expand(2, -1, -1))
    assert out.shape == (2, 3, 3)
    torch.testing.assert_close(out, x[:, :, ij[:, 0], ij[:, 1]])
    # halfway between two horizontal neighbours: their mean
    mid = torch.tensor([[[1.0 / 7, 0.5 / 5]]]).expand(2, -1, -1)
    torch.testing.assert_close(mmcv_ops.point_sample(x, mid)[..., 0], (x[:, :, 0, 0] + x[:, :, 0, 1]) / 2)
    # grid-shaped points keep their grid
    assert mmcv_ops.point_sample(x, torch.rand(2, 4, 6, 2)).shape == (2, 3, 4, 6)


def test_ensure_reports_missing_mmcv(monkeypatch):
    monkeypatch.setattr(mmcv_ops.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModuleNotFoundError, match="segmentation extra"):
        mmcv_ops.ensure_mmcv_ops()
