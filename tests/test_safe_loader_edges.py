"""The safe loader (droppos/utils/checkpoint.py) on the inputs its mutation run found untested: plain pickles
that are allowed (an OrderedDict of arrays, an ``argparse.Namespace``, bare integers either side of torch's
legacy magic number), torch archives refused for an opcode rather than a global, and broken files whose error
is one line with torch's whole reason. tests/test_hostile_files.py has the hostile globals."""

from __future__ import annotations

import argparse
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

from droppos.errors import UserError
from droppos.utils.checkpoint import safe_load


def test_a_detectron2_style_pickle_loads_with_tensors(tmp_path):
    arrays = OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.zeros(3, dtype=np.int64))
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": arrays, "args": argparse.Namespace(depth=12), "__author__": "x"}))
    obj = safe_load(path)
    assert list(obj["model"]) == ["w", "b"] and obj["args"].depth == 12 and obj["__author__"] == "x"
    assert isinstance(obj["model"]["w"], torch.Tensor) and torch.equal(obj["model"]["w"], torch.arange(6.).reshape(2, 3))
    assert obj["model"]["b"].dtype == torch.int64


@pytest.mark.parametrize("value", [5, 10**40])  # below and above torch's legacy MAGIC_NUMBER (~1.2e23)
def test_a_pickle_of_a_number_is_a_plain_pickle_not_a_legacy_torch_file(tmp_path, value):
    assert torch.serialization.MAGIC_NUMBER not in (5, 10**40)
    path = tmp_path / "n.pkl"
    path.write_bytes(pickle.dumps(value))
    assert safe_load(path) == value


@pytest.mark.parametrize("data, reason", [(b"\x80\x04", "EOFError: Ran out of input"),
                                          (b"\x80\x04\x95", "pickle data was truncated")])
def test_a_truncated_pickle_is_one_line(tmp_path, data, reason):
    path = tmp_path / "cut.pkl"
    path.write_bytes(data)
    with pytest.raises(UserError, match=f"{path}: not a readable pickle.*{reason}"):
        safe_load(path)


def _with_data_pkl(src, dst, data: bytes):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            zout.writestr(name, data if name.endswith("/data.pkl") else zin.read(name))


def test_a_torch_archive_with_an_unsupported_opcode_names_it(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "ok.pth")
    _with_data_pkl(tmp_path / "ok.pth", tmp_path / "op.pth", b"\x80\x02I1\n.")  # INT, a protocol-0 opcode
    with pytest.raises(UserError, match=r"op.pth: holds pickled Python objects besides tensors \(Unsupported "
                                        r"operand 73\); if you trust its source, pass --trust-pickle"):
        safe_load(tmp_path / "op.pth")
    assert safe_load(tmp_path / "op.pth", trust_pickle=True) == 1  # trusted: a full unpickle reads the opcode


def test_a_broken_archive_is_one_line_with_torchs_whole_reason(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as info:
        safe_load(tmp_path / "cut.pth")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 'cut.pth'}: not a readable PyTorch checkpoint")
    assert "failed finding central directory" in msg
