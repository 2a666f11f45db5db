"""A local Hugging Face hub cache, built in the tests: repositories in the cache's exact layout
(``models--<org>--<repo>/refs/main`` naming a commit, ``snapshots/<commit>/<files>``), holding random weights
in the files each kind of repository publishes. Nothing is downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_repo(cache: Path, repo: str, files: dict[str, Path | str], commit: str = COMMIT) -> Path:
    """``repo`` at ``commit`` (also ``refs/main``) with ``files`` (name -> a file to copy, or JSON/text)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, snapshot / name)
        else:
            (snapshot / name).write_text(content)
    return snapshot


def timm_repo(cache: Path, model_name: str, tag: str, tmp: Path, seed: int = 0) -> Path:
    """``timm/<model>.<tag>`` as timm publishes it (its own ``save_for_hf``, which ``push_to_hf_hub`` uses):
    ``model.safetensors`` of the whole model, classifier included, and ``config.json`` with ``architecture``
    and ``pretrained_cfg``."""
    import timm
    import torch
    from timm.models._hub import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model(f"{model_name}.{tag}", pretrained=False)
    folder = tmp / f"{model_name}.{tag}"
    save_for_hf(model, str(folder), safe_serialization=True)
    files = {p.name: p for p in folder.iterdir()}
    return add_repo(cache, f"timm/{model_name}.{tag}", files)
