"""Tests of tools/install_detectron2.py (the detectron2 install step) and of the installed detectron2.

The rebuild is tested on a tiny fake wheel with the odd features of PyPI's sal-detectron2 0.7.2:
a ``cp310`` file name, ``Tag: cp310-cp310-linux_x86_64`` / ``Root-Is-Purelib: false`` in WHEEL, a
compiled ``detectron2/_C*.so``, a stray top-level ``tools/`` package, a ``numpy<2`` pin, and no
``fvcore`` / ``iopath`` requirement.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from droppos.tools import install_detectron2 as inst

DIST = "sal_detectron2-0.7.2.dist-info"
METADATA = """Metadata-Version: 2.1
Name: sal-detectron2
Version: 0.7.2
Requires-Python: >=3.8
Requires-Dist: Pillow>=7.1
Requires-Dist: numpy<2
Requires-Dist: dataclasses; python_version < "3.7"
Requires-Dist: omegaconf<2.4,>=2.1
Provides-Extra: all
Requires-Dist: timm; extra == "all"

Long description with numpy<2 in it, which must stay as it is.
"""
WHEEL = "Wheel-Version: 1.0\nGenerator: setuptools (75.6.0)\nRoot-Is-Purelib: false\nTag: cp310-cp310-linux_x86_64\n\n"
SOURCES = {
    "detectron2/__init__.py": b'__version__ = "0.7.2"\n',
    "detectron2/modeling/vit.py": b"class ViT:\n    pass\n",
    "detectron2/model_zoo/configs/common/models/mask_rcnn_vitdet.py": b"model = None\n",
}


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_fake_wheel(folder: Path, extra: dict[str, bytes] | None = None, metadata: str = METADATA) -> Path:
    """A cp310 wheel shaped like sal-detectron2 0.7.2, with a valid RECORD."""
    files = dict(SOURCES)
    files["detectron2/_C.cpython-310-x86_64-linux-gnu.so"] = b"\x7fELF fake extension"
    files["tools/__init__.py"] = b""
    files["tools/train_net.py"] = b"print('stray')\n"
    files.update(extra or {})
    files[f"{DIST}/METADATA"] = metadata.encode()
    files[f"{DIST}/WHEEL"] = WHEEL.encode()
    files[f"{DIST}/top_level.txt"] = b"detectron2\ntools\n"
    record = "".join(f"{name},{_hash(data)},{len(data)}\n" for name, data in files.items())
    files[f"{DIST}/RECORD"] = (record + f"{DIST}/RECORD,,\n").encode()
    path = folder / "sal_detectron2-0.7.2-cp310-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 11, 29, 13, 46, 12))
            info.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            zf.writestr(info, data)
    return path


def _read(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _requirements(metadata: str) -> list[str]:
    head = metadata.partition("\n\n")[0]
    return [line.split(":", 1)[1].strip() for line in head.splitlines() if line.startswith("Requires-Dist:")]


def test_rebuild_makes_pure_py3_wheel(tmp_path):
    src = make_fake_wheel(tmp_path)
    result = inst.rebuild_wheel(src, tmp_path / "out")

    assert result.output == tmp_path / "out" / "sal_detectron2-0.7.2-py3-none-any.whl"
    files = _read(result.output)
    assert sorted(result.dropped) == ["detectron2/_C.cpython-310-x86_64-linux-gnu.so",
                                      "tools/__init__.py", "tools/train_net.py"]
    assert not any(name.endswith(".so") or name.startswith("tools/") for name in files)
    for name, data in SOURCES.items():  # Python sources are copied byte for byte
        assert files[name] == data

    wheel_lines = files[f"{DIST}/WHEEL"].decode().splitlines()
    assert "Root-Is-Purelib: true" in wheel_lines
    assert [line for line in wheel_lines if line.startswith("Tag:")] == ["Tag: py3-none-any"]
    assert files[f"{DIST}/top_level.txt"].decode().split() == ["detectron2"]
    assert {n.split("/")[0] for n in files} == {"detectron2", DIST}  # one, consistent dist-info

    metadata = files[f"{DIST}/METADATA"].decode()
    reqs = _requirements(metadata)
    assert "numpy" in reqs and not any(r.startswith("numpy<") for r in reqs)
    assert {"fvcore", "iopath"} <= set(reqs)
    assert 'timm; extra == "all"' in reqs and "omegaconf<2.4,>=2.1" in reqs  # others untouched
    assert metadata.endswith("Long description with numpy<2 in it, which must stay as it is.\n")
    assert result.requirement_changes == ["relaxed 'numpy<2' -> 'numpy'", "added 'fvcore'", "added 'iopath'"]

    with zipfile.ZipFile(result.output) as zf:
        mode = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
    assert mode["detectron2/__init__.py"] == 0o644


def test_rebuilt_record_lists_every_file_with_correct_hash(tmp_path):
    out = inst.rebuild_wheel(make_fake_wheel(tmp_path), tmp_path / "out").output
    files = _read(out)
    assert list(files)[-1] == f"{DIST}/RECORD"
    rows = list(csv.reader(io.StringIO(files[f"{DIST}/RECORD"].decode())))
    assert sorted(row[0] for row in rows) == sorted(files)
    for name, digest, size in rows:
        if name == f"{DIST}/RECORD":
            assert (digest, size) == ("", "")
        else:
            assert digest == _hash(files[name]) and int(size) == len(files[name]), name
    assert inst.verify_record(out) == []


def test_rebuild_is_deterministic(tmp_path):
    src = make_fake_wheel(tmp_path)
    a = inst.rebuild_wheel(src, tmp_path / "a").output.read_bytes()
    b = inst.rebuild_wheel(src, tmp_path / "b").output.read_bytes()
    assert a == b


def test_fix_metadata_keeps_lower_bounds_markers_and_existing_requirements():
    text = ("Name: x\nVersion: 1\nRequires-Dist: numpy (>=1.20,<2); python_version >= \"3.8\"\n"
            "Requires-Dist: fvcore>=0.1\nRequires-Dist: iopath; extra == \"all\"\n")
    new, changes = inst.fix_metadata(text)
    reqs = _requirements(new)
    assert 'numpy>=1.20; python_version >= "3.8"' in reqs
    assert reqs.count("fvcore>=0.1") == 1 and "fvcore" not in reqs  # already declared: not added again
    assert "iopath" in reqs  # only an extra declared it, so it is added unconditionally
    assert changes == ["relaxed 'numpy (>=1.20,<2); python_version >= \"3.8\"' -> "
                       "'numpy>=1.20; python_version >= \"3.8\"'", "added 'iopath'"]


def test_rebuild_rejects_bad_input(tmp_path):
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    with pytest.raises(inst.WheelError, match="junk.whl: not a readable wheel"):
        inst.rebuild_wheel(junk, tmp_path / "out")

    other_so = make_fake_wheel(tmp_path, extra={"detectron2/layers/other.so": b"\x7fELF"})
    with pytest.raises(inst.WheelError, match="detectron2/layers/other.so is compiled code"):
        inst.rebuild_wheel(other_so, tmp_path / "out")

    renamed = make_fake_wheel(tmp_path, metadata=METADATA.replace("Version: 0.7.2", "Version: 0.7.3"))
    with pytest.raises(inst.WheelError, match="METADATA name/version do not match"):
        inst.rebuild_wheel(renamed, tmp_path / "out")
    assert not (tmp_path / "out" / "sal_detectron2-0.7.2-py3-none-any.whl").exists()


def test_main_rebuilds_then_skips_existing_output(tmp_path, capsys):
    src = make_fake_wheel(tmp_path)
    out = tmp_path / "wheels"
    assert inst.main(["--wheel", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dropped detectron2/_C.cpython-310-x86_64-linux-gnu.so" in printed
    assert "dropped the stray top-level tools/ package (2 files)" in printed
    assert "relaxed 'numpy<2' -> 'numpy'" in printed
    # Second call without --wheel: the valid output is reused and pip is never run.
    assert inst.main(["--pip", str(tmp_path / "no-such-pip"), "--out", str(out)]) == 0
    assert "already built; nothing to do" in capsys.readouterr().out

    assert inst.main(["--wheel", str(tmp_path / "missing.whl"), "--out", str(out)]) == 1
    assert "missing.whl: no such file" in capsys.readouterr().err


def test_pip_installs_rebuilt_wheel_on_this_python(tmp_path):
    """pip refuses the cp310 original on other Pythons; the rebuilt wheel must install here."""
    out = inst.rebuild_wheel(make_fake_wheel(tmp_path), tmp_path / "out").output
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--disable-pip-version-check", "--target", str(target), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (target / "detectron2" / "modeling" / "vit.py").is_file()
    assert not (target / "tools").exists()
    assert not list((target / "detectron2").glob("_C*"))
    assert "Requires-Dist: fvcore" in (target / DIST / "METADATA").read_text()


@pytest.mark.detectron2
def test_installed_detectron2_vit_runs_on_cpu():
    """The detectron2 in this venv (rebuilt wheel or official build) runs ViTDet's backbone on CPU."""
    pytest.importorskip("detectron2")
    import torch
    from detectron2 import model_zoo
    from detectron2.modeling.backbone.vit import ViT

    torch.manual_seed(0)
    vit = ViT(img_size=64, patch_size=16, embed_dim=192, depth=2, num_heads=3, window_size=0,
              use_rel_pos=False, out_feature="last_feat").eval()
    with torch.no_grad():
        feats = vit(torch.randn(2, 3, 64, 64))
    assert feats["last_feat"].shape == (2, 192, 4, 4)
    assert torch.isfinite(feats["last_feat"]).all()

    # The model-zoo LazyConfigs ship with it (needs pkg_resources, i.e. setuptools < 81).
    cfg = model_zoo.get_config("common/models/mask_rcnn_vitdet.py")
    assert cfg.model.backbone.net.embed_dim == 768
