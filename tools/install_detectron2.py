"""Build an installable detectron2 wheel from PyPI's ``sal-detectron2`` (stdlib only).

detectron2 is not on PyPI under its own name. ``sal-detectron2==0.7.2`` is detectron2's main
branch (with ViTDet and the model-zoo LazyConfigs), but it is tagged for CPython 3.10 and ships a
``_C`` extension built for CPython 3.10 / CUDA 12.1 / torch 2.3, so pip refuses it on other
Pythons. detectron2 runs without ``_C`` (ROIAlign and NMS come from torchvision), so this script
rebuilds it as a pure ``py3-none-any`` wheel:

- drops ``detectron2/_C*.so`` and the stray top-level ``tools/`` package it ships;
- relaxes the ``numpy<2`` pin and adds ``fvcore`` and ``iopath`` (imported, not declared);
- sets the WHEEL file to ``Root-Is-Purelib: true`` / ``Tag: py3-none-any``;
- rewrites RECORD with the sha256 and size of every file.

Usage (runs before the project is installed; needs only the standard library and a pip):

    python tools/install_detectron2.py --pip .venv/bin/pip --out build/wheels
    python tools/install_detectron2.py --wheel sal_detectron2-0.7.2-cp310-none-any.whl --out build/wheels
    .venv/bin/pip install build/wheels/sal_detectron2-0.7.2-py3-none-any.whl

It downloads with ``pip download --no-deps --only-binary=:all: --python-version 3.10``, writes
``<out>/<name>-<version>-py3-none-any.whl`` and skips all work when that file already exists and
is valid (``--force`` rebuilds). Users with a CUDA toolkit can instead install detectron2 from
its official git repository; the project works with either.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SPEC = "sal-detectron2==0.7.2"
DOWNLOAD_PYTHON = "3.10"
OUTPUT_TAG = "py3-none-any"
ADDED_REQUIREMENTS = ("fvcore", "iopath")
RELAXED_UPPER_BOUNDS = ("numpy",)
DROPPED_TOP_LEVEL = ("tools",)
_DROPPED_EXTENSION = re.compile(r"^detectron2/_C[^/]*\.(so|pyd)$")
_BINARY_EXTENSION = re.compile(r"\.(so|pyd|dylib)$")
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class WheelError(ValueError):
    """A wheel that cannot be rebuilt; the message names the file and the fix."""


@dataclass
class RebuildResult:
    """What :func:`rebuild_wheel` did.

    output: path of the written ``py3-none-any`` wheel.
    dropped: archive paths left out (compiled ``_C``, stray ``tools/``).
    requirement_changes: one human-readable line per edited METADATA requirement.
    n_files: number of files in the output wheel (RECORD included).
    """

    output: Path
    dropped: list[str] = field(default_factory=list)
    requirement_changes: list[str] = field(default_factory=list)
    n_files: int = 0


def normalize_name(name: str) -> str:
    """PEP 503 normalised project name: ``Sal_Detectron2`` -> ``sal-detectron2``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def record_hash(data: bytes) -> str:
    """RECORD hash field of ``data``: ``sha256=<urlsafe base64 without padding>``."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def fix_metadata(text: str) -> tuple[str, list[str]]:
    """Relax the upper bounds in RELAXED_UPPER_BOUNDS and add ADDED_REQUIREMENTS.

    Only the header block (up to the first blank line) is edited; the long description is kept.
    Returns the new METADATA text and one line per change.
    """
    head, sep, body = text.partition("\n\n")
    lines = head.split("\n")
    changes: list[str] = []
    present: set[str] = set()
    last_plain_req = -1
    for i, line in enumerate(lines):
        if not line.startswith("Requires-Dist:"):
            continue
        req = line[len("Requires-Dist:"):].strip()
        match = _REQUIREMENT_NAME.match(req)
        if match is None:
            continue
        name = normalize_name(match.group(1))
        requirement, _, marker = req.partition(";")
        if not re.search(r"\bextra\s*==", marker):
            present.add(name)
            last_plain_req = i
        if name in RELAXED_UPPER_BOUNDS:
            spec = requirement[match.end():].strip().strip("()")
            kept = [s.strip() for s in spec.split(",") if s.strip() and not s.strip().startswith(("<", "==", "~="))]
            new_req = match.group(1) + ",".join(kept)
            if marker:
                new_req += "; " + marker.strip()
            if new_req != req:
                lines[i] = "Requires-Dist: " + new_req
                changes.append(f"relaxed {req!r} -> {new_req!r}")
    insert_at = last_plain_req + 1 if last_plain_req >= 0 else len(lines)
    for name in ADDED_REQUIREMENTS:
        if name not in present:
            lines.insert(insert_at, f"Requires-Dist: {name}")
            insert_at += 1
            changes.append(f"added {name!r}")
    return "\n".join(lines) + sep + body, changes


def fix_wheel_file(text: str) -> str:
    """WHEEL file with ``Root-Is-Purelib: true`` and the single tag OUTPUT_TAG."""
    out: list[str] = []
    tag_written = False
    for line in text.splitlines():
        if line.startswith("Root-Is-Purelib:"):
            out.append("Root-Is-Purelib: true")
        elif line.startswith("Tag:"):
            if not tag_written:
                out.append(f"Tag: {OUTPUT_TAG}")
                tag_written = True
        elif line.strip():
            out.append(line)
    if not any(line.startswith("Root-Is-Purelib:") for line in out):
        out.append("Root-Is-Purelib: true")
    if not tag_written:
        out.append(f"Tag: {OUTPUT_TAG}")
    return "\n".join(out) + "\n\n"


def _dist_info_dir(names: list[str], src: Path) -> str:
    dirs = sorted({n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")})
    if len(dirs) != 1:
        raise WheelError(f"{src}: expected one *.dist-info folder, found {dirs or 'none'}; "
                         "pass the wheel downloaded by pip (--wheel PATH)")
    return dirs[0]


def _is_dropped(name: str) -> bool:
    return bool(_DROPPED_EXTENSION.match(name)) or name.split("/")[0] in DROPPED_TOP_LEVEL


def rebuild_wheel(src: Path, out_dir: Path) -> RebuildResult:
    """Rewrite the wheel ``src`` as a pure ``py3-none-any`` wheel in ``out_dir``.

    The dist-info name and version are kept (checked against METADATA), so the output is
    ``<out_dir>/<name>-<version>-py3-none-any.whl``. File contents, timestamps and permissions are
    copied; RECORD is regenerated. Raises WheelError for a file that is not a wheel, a wheel
    whose dist-info does not match its METADATA, or one with compiled code other than ``_C``.
    """
    src, out_dir = Path(src), Path(out_dir)
    try:
        zin = zipfile.ZipFile(src)
    except (OSError, zipfile.BadZipFile) as err:
        raise WheelError(f"{src}: not a readable wheel ({err}); delete it and download again") from err
    with zin:
        infos = [i for i in zin.infolist() if not i.is_dir()]
        names = [i.filename for i in infos]
        dist_info = _dist_info_dir(names, src)
        dist_stem = dist_info[: -len(".dist-info")]
        if "-" not in dist_stem:
            raise WheelError(f"{src}: dist-info folder {dist_info!r} is not '<name>-<version>.dist-info'")
        dist_name, version = dist_stem.rsplit("-", 1)
        for required in ("METADATA", "WHEEL"):
            if f"{dist_info}/{required}" not in names:
                raise WheelError(f"{src}: {dist_info}/{required} is missing; this is not a valid wheel")

        metadata = zin.read(f"{dist_info}/METADATA").decode("utf-8")
        meta_name = re.search(r"^Name:\s*(.+)$", metadata, re.M)
        meta_version = re.search(r"^Version:\s*(.+)$", metadata, re.M)
        if (meta_name is None or meta_version is None
                or normalize_name(meta_name.group(1).strip()) != normalize_name(dist_name)
                or meta_version.group(1).strip() != version):
            raise WheelError(f"{src}: METADATA name/version do not match {dist_info!r}; "
                             "the wheel is damaged, download it again")

        result = RebuildResult(output=out_dir / f"{dist_stem}-{OUTPUT_TAG}.whl")
        payload: list[tuple[zipfile.ZipInfo, bytes]] = []
        signatures = {f"{dist_info}/RECORD", f"{dist_info}/RECORD.jws", f"{dist_info}/RECORD.p7s"}
        for info in infos:
            name = info.filename
            if name in signatures:
                continue
            if _is_dropped(name):
                result.dropped.append(name)
                continue
            if _BINARY_EXTENSION.search(name):
                raise WheelError(f"{src}: {name} is compiled code that a py3-none-any wheel cannot "
                                 "carry; install this package from source instead")
            data = zin.read(name)
            if name == f"{dist_info}/METADATA":
                text, result.requirement_changes = fix_metadata(data.decode("utf-8"))
                data = text.encode("utf-8")
            elif name == f"{dist_info}/WHEEL":
                data = fix_wheel_file(data.decode("utf-8")).encode("utf-8")
            elif name == f"{dist_info}/top_level.txt":
                kept = [t for t in data.decode("utf-8").split() if t not in DROPPED_TOP_LEVEL]
                data = ("\n".join(kept) + "\n").encode("utf-8")
            payload.append((info, data))

    # dist-info last, as the wheel spec recommends; RECORD is the very last entry.
    payload.sort(key=lambda item: item[0].filename.startswith(dist_info + "/"))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for info, data in payload:
        writer.writerow([info.filename, record_hash(data), len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = result.output.with_name(result.output.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info, data in payload:
            entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            entry.external_attr = info.external_attr
            entry.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(entry, data)
        entry = zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=payload[-1][0].date_time)
        entry.external_attr = 0o644 << 16
        entry.compress_type = zipfile.ZIP_DEFLATED
        zout.writestr(entry, record.getvalue().encode("utf-8"))
    tmp.replace(result.output)
    result.n_files = len(payload) + 1
    return result


def verify_record(wheel: Path) -> list[str]:
    """Problems with ``wheel``'s RECORD (missing, extra or wrong hash/size entries); [] if none."""
    problems: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        records = [n for n in names if n.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            return [f"expected one RECORD, found {len(records)}"]
        rows = list(csv.reader(io.StringIO(zf.read(records[0]).decode("utf-8"))))
        listed = {row[0]: row for row in rows if row}
        for name in names:
            if name not in listed:
                problems.append(f"{name} is not in RECORD")
            elif name != records[0]:
                _, digest, size = listed[name]
                data = zf.read(name)
                if digest != record_hash(data) or size != str(len(data)):
                    problems.append(f"{name}: RECORD hash/size do not match the file")
        problems += [f"{n} is in RECORD but not in the wheel" for n in listed if n not in names]
    return problems


def download_wheel(pip: list[str], spec: str, dest: Path) -> Path:
    """``pip download`` the CPython-3.10 binary wheel of ``spec`` into ``dest``; returns its path."""
    cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", DOWNLOAD_PYTHON,
           "--disable-pip-version-check", "--quiet", "--quiet", "--dest", str(dest), spec]
    print(f"install_detectron2: downloading {spec}: {shlex.join(cmd)}", flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise WheelError(f"pip download of {spec} failed (exit {proc.returncode}); check that PyPI is "
                         "reachable, or download the wheel yourself and pass --wheel PATH")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise WheelError(f"pip download of {spec} left {len(wheels)} wheels in {dest}; expected one")
    return wheels[0]


def _expected_output(spec: str, out_dir: Path) -> Path | None:
    """Output path for a pinned ``name==version`` spec (None when the spec is not pinned)."""
    name, sep, version = spec.partition("==")
    if not sep:
        return None
    return out_dir / f"{normalize_name(name).replace('-', '_')}-{version.strip()}-{OUTPUT_TAG}.whl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pip", default=None,
                        help="pip executable used to download (default: this Python's `-m pip`)")
    parser.add_argument("--out", type=Path, default=Path("build/wheels"),
                        help="folder for the rebuilt wheel (default: build/wheels)")
    parser.add_argument("--wheel", type=Path, default=None,
                        help="rebuild this already downloaded wheel instead of downloading")
    parser.add_argument("--spec", default=DEFAULT_SPEC, help=f"what to download (default: {DEFAULT_SPEC})")
    parser.add_argument("--force", action="store_true", help="rebuild even if the output wheel exists")
    args = parser.parse_args(argv)
    pip = [args.pip] if args.pip else [sys.executable, "-m", "pip"]

    try:
        if args.wheel is None and not args.force:
            existing = _expected_output(args.spec, args.out)
            if existing is not None and existing.is_file() and not verify_record(existing):
                print(f"install_detectron2: {existing} already built; nothing to do (--force rebuilds)")
                return 0
        with tempfile.TemporaryDirectory(prefix="install_detectron2-") as tmp:
            if args.wheel is not None:
                if not args.wheel.is_file():
                    raise WheelError(f"{args.wheel}: no such file; pass the path of a downloaded wheel")
                src = args.wheel
            else:
                src = download_wheel(pip, args.spec, Path(tmp))
            result = rebuild_wheel(src, args.out)
    except WheelError as err:
        print(f"install_detectron2: error: {err}", file=sys.stderr)
        return 1
    problems = verify_record(result.output)
    if problems:
        print(f"install_detectron2: error: {result.output}: {problems[0]}", file=sys.stderr)
        return 1
    print(f"install_detectron2: rebuilt {src.name} -> {result.output} ({result.n_files} files)")
    stray = [n for n in result.dropped if n.split("/")[0] in DROPPED_TOP_LEVEL]
    for name in result.dropped:
        if name not in stray:
            print(f"install_detectron2:   dropped {name}")
    for top in DROPPED_TOP_LEVEL:
        count = sum(n.split("/")[0] == top for n in stray)
        if count:
            print(f"install_detectron2:   dropped the stray top-level {top}/ package ({count} files)")
    for change in result.requirement_changes:
        print(f"install_detectron2:   {change}")
    print(f"install_detectron2:   tag {OUTPUT_TAG}, Root-Is-Purelib true, RECORD rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
