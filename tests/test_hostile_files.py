"""Hostile checkpoints as a class (tests/hostile.py): every format x every global outside the allow-lists,
refused by the safe loader before anything runs, in one line naming the file and the fix; and each format
through every command that reads a weights file. Each file is first shown to be a real attack: loaded without
restriction, it runs its payload."""

from __future__ import annotations

import pytest
from hostile import FORMATS, GLOBALS, getattr_pickle, hostile_file, prove_payload_runs, write_hostile

from droppos.errors import UserError
from droppos.utils.checkpoint import safe_load

LABELS = [g[0] for g in GLOBALS]


@pytest.fixture
def markers(tmp_path):
    d = tmp_path / "markers"
    d.mkdir()
    return d


@pytest.fixture(params=[False, True], ids=["torch-allow-list", "with-mmengine-allow-list"])
def allow_lists(request):
    """The safe loader alone, and after segmentation added mmengine's entries (process-wide, getattr included)."""
    if request.param:
        pytest.importorskip("mmengine")
        from droppos.transfer.segmentation.safe_load import allow_mmengine_checkpoints

        allow_mmengine_checkpoints()
    return request.param


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_hostile_file_is_a_real_attack(tmp_path, markers, fmt, label):
    assert prove_payload_runs(hostile_file(tmp_path, fmt, label, markers), markers)


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_safe_loader_refuses_every_global_outside_the_allow_list(tmp_path, markers, allow_lists, fmt, label):
    path = hostile_file(tmp_path, fmt, label, markers)
    with pytest.raises(UserError) as e:
        safe_load(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "--trust-pickle" in msg, msg
    assert not list(markers.iterdir())


@pytest.mark.parametrize("fmt", ["pkl", "pth-zip", "pth-legacy"])
@pytest.mark.parametrize("target,name", [("numpy.ndarray", "tofile"),
                                         ("mmengine.logging.history_buffer.HistoryBuffer", "register_statistics"),
                                         ("mmengine.logging.history_buffer.HistoryBuffer", "__init__")])
def test_getattr_reaches_no_other_attribute(tmp_path, allow_lists, fmt, target, name):
    """builtins.getattr is allowed only as mmengine's statistics lookup: any other attribute is refused."""
    module, cls = target.rsplit(".", 1)
    path = write_hostile(tmp_path / ("getattr.pkl" if fmt == "pkl" else "getattr.pth"), fmt,
                         getattr_pickle(module, cls, name))
    with pytest.raises(UserError, match="--trust-pickle"):
        safe_load(path)


def test_trusting_a_file_is_explicit(tmp_path, markers):
    """--trust-pickle is the one way to run a file's pickle, in each format."""
    for fmt in FORMATS:
        safe_load(hostile_file(tmp_path, fmt, "os.system", markers), trust_pickle=True)
        assert [m.name for m in markers.iterdir()] == [f"RAN_{fmt}_os.system"]
        next(markers.iterdir()).unlink()
