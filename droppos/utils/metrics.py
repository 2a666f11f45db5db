"""A backbone's identity in every record (``backbone_record``), its architecture label, a data set's id.

The records themselves (``metrics.json``, ``init.json``, ``run.json``) are typed in
:mod:`droppos.runs.records`.
"""

from __future__ import annotations

from pathlib import Path


def backbone_record(method: str, arch: dict | str, epochs: int | None = None, source: str = "", id: str | None = None,
                    data: str | None = None, sha256: str | None = None) -> dict:
    """A backbone's identity: ``id`` (its name: the results table's row key), method, architecture,
    pretraining epochs and data, the source and its hash. ``id`` defaults to '<method>-<arch>[-e<epochs>]'."""
    arch_name = arch if isinstance(arch, str) else arch_label(arch)
    if id is None:
        id = f"{method}-{arch_name}" + (f"-e{epochs}" if epochs else "")
    record = {"id": id, "method": method, "arch": arch_name, "epochs": epochs, "source": str(source)}
    if data:
        record["data"] = str(data)
    if sha256:
        record["sha256"] = sha256
    return record


def arch_label(arch: dict) -> str:
    """'vit_base_p16' style label from architecture arguments (named sizes where they match)."""
    from droppos.models.vit import VIT_SIZES

    triple = (arch.get("embed_dim"), arch.get("depth"), arch.get("num_heads"))
    name = next((k for k, v in VIT_SIZES.items() if v == tuple(triple)), None)
    if name is None:
        name = f"d{triple[0]}x{triple[1]}"
    return f"vit_{name}_p{arch.get('patch_size')}"


def data_id(root: str | Path) -> str | None:
    """A data set's identity: the hash of the ``dataset.json`` its builder wrote (build options, seed,
    counts), so that runs on two data sets of one name are never averaged as seeds; None without one."""
    import hashlib

    root = Path(root)
    for candidate in (root / "dataset.json", root.parent / "dataset.json"):
        if candidate.is_file():
            return hashlib.sha256(candidate.read_bytes()).hexdigest()[:12]
    return None
