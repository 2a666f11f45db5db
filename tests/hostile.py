"""Hostile checkpoints as a class: every container format a loader meets, each carrying a call of a global
outside the allow-lists (functions, disallowed names inside allowed modules, attribute paths through an
allowed module). Unpickling any of them would create a file in ``marker_dir``.

The pickles are written opcode by opcode (no ``__reduce__`` of a real object), so a payload can name any
``module`` / ``name`` pair, dotted attribute paths included, exactly as an attacker's file would.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import torch

#: (label, module, name, args): each call writes the file named by its ``{m}`` argument
GLOBALS = [
    ("os.system", "os", "system", ("touch {m}",)),
    ("posix.system", "posix", "system", ("touch {m}",)),
    ("builtins.eval", "builtins", "eval", ("__import__('os').system('touch {m}')",)),
    ("builtins.exec", "builtins", "exec", ("open('{m}', 'w').close()",)),
    ("subprocess.getoutput", "subprocess", "getoutput", ("touch {m}",)),
    ("numpy.save", "numpy", "save", ("{m}.npy", "x")),  # a disallowed name in an allowed module
    ("torch.save", "torch", "save", ("x", "{m}")),  # the same, in torch's allowed module
    ("argparse._os.system", "argparse", "_os.system", ("touch {m}",)),  # an attribute path through an allowed module
]

FORMATS = ["pkl", "pth-zip", "pt-zip", "pth-legacy", "pth-tar"]


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _obj(v) -> bytes:
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, tuple):
        return b"(" + b"".join(_obj(x) for x in v) + b"t"  # MARK ... TUPLE
    if isinstance(v, dict):
        return b"}" + (b"(" + b"".join(_obj(k) + _obj(x) for k, x in v.items()) + b"u" if v else b"")
    raise TypeError(v)


def payload_pickle(module: str, name: str, args: tuple) -> bytes:
    """``{"model": module.name(*args)}``: protocol 4 (STACK_GLOBAL) when ``name`` is an attribute path, else 2."""
    if "." in name:
        call = _str(module) + _str(name) + b"\x93"  # STACK_GLOBAL
        head = b"\x80\x04"
    else:
        call = b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL
        head = b"\x80\x02"
    return head + b"}" + _str("model") + call + _obj(tuple(args)) + b"R" + b"s" + b"."


def getattr_pickle(module: str, cls: str, name: str) -> bytes:
    """``{"model": getattr(module.cls, name)}`` (protocol 2)."""
    call = b"cbuiltins\ngetattr\n(c" + module.encode() + b"\n" + cls.encode() + b"\n" + _str(name) + b"tR"
    return b"\x80\x02}" + _str("model") + call + b"s."


def write_hostile(path: Path, fmt: str, data: bytes) -> Path:
    """``data`` (a pickle stream) in the container ``fmt`` of :data:`FORMATS`."""
    if fmt == "pkl":
        path.write_bytes(data)
    elif fmt in ("pth-zip", "pt-zip"):  # torch.save's archive with its data.pkl replaced
        buf = io.BytesIO()
        torch.save({"model": torch.zeros(2)}, buf)
        src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                dst.writestr(info, data if info.filename.endswith("/data.pkl") else src.read(info))
    elif fmt == "pth-legacy":  # torch.save(_use_new_zipfile_serialization=False): magic, version, sys info, object
        sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
        head = b"".join(pickle.dumps(x, protocol=2) for x in
                        (torch.serialization.MAGIC_NUMBER, torch.serialization.PROTOCOL_VERSION, sys_info))
        path.write_bytes(head + data + pickle.dumps([], protocol=2))
    elif fmt == "pth-tar":  # the pre-0.4 tar layout: sys_info, pickle, storages, tensors
        with tarfile.open(path, "w:", format=tarfile.PAX_FORMAT) as tar:
            for member, content in (("sys_info", pickle.dumps({"protocol_version": 1001, "little_endian": True,
                                                                 "type_sizes": {}}, protocol=2)),
                                    ("pickle", data), ("storages", pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2)),
                                    ("tensors", pickle.dumps(0, protocol=2))):
                info = tarfile.TarInfo(member)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    else:
        raise ValueError(fmt)
    return path


def hostile_file(folder: Path, fmt: str, label: str, marker_dir: Path) -> Path:
    """The file of ``fmt`` carrying the call ``label`` of :data:`GLOBALS`; it would create a file in marker_dir."""
    _, module, name, args = next(g for g in GLOBALS if g[0] == label)
    marker = marker_dir / f"RAN_{fmt}_{label}"
    args = tuple(a.format(m=marker) if isinstance(a, str) else a for a in args)
    suffix = {"pkl": ".pkl", "pt-zip": ".pt"}.get(fmt, ".pth")
    return write_hostile(folder / f"evil_{fmt}_{label}{suffix}", fmt, payload_pickle(module, name, args))


def prove_payload_runs(path: Path, marker_dir: Path) -> bool:
    """Whether the file really runs its payload when loaded without restriction (the test's own check)."""
    before = set(marker_dir.iterdir())
    try:
        if path.suffix == ".pkl":
            pickle.loads(path.read_bytes())
        else:
            torch.load(path, weights_only=False)
    except Exception:  # noqa: BLE001 - the call ran, or failed after running; the marker tells
        pass
    return set(marker_dir.iterdir()) != before
