"""Backbones named where researchers get them: the Hugging Face hub (through its local cache) and model folders.

* ``hf:<org>/<repo>[@revision]``: a ``transformers`` ViT / ViTMAE / DINOv2 repository; the files come
  from the hub cache (``huggingface_hub.snapshot_download``: ``HF_HUB_OFFLINE=1`` and ``HF_HOME`` /
  ``HF_HUB_CACHE`` honoured), ``config.json`` gives the architecture, the weights go through the readers.
* a local model folder (a hub snapshot, ``save_pretrained`` output): ``config.json`` + ``model.safetensors``
  (or ``pytorch_model.bin``), read the same way.
* ``timm:<name>.<tag>`` and ``hf-hub:<org>/<repo>``: timm's own pretrained machinery (see :mod:`.generic`);
  this module finds the file it read in the cache, for the record.

Nothing from a repository is ever run: only ``config.json`` (JSON), ``.safetensors`` and weights-only
``.bin`` files are read. A repository that is not cached while offline is one line naming it and the
command that downloads it; the record holds the repo id, the resolved revision (commit hash) and the
weights' sha256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from droppos.errors import UserError

from .naming import HUB, parse_source

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: transformers ``model_type`` values whose weights the ``hf`` reader reads into this project's ViT
MODEL_TYPES = ("vit", "vit_mae", "dinov2", "dinov2_with_registers")


@dataclass
class ModelFolder:
    """A model folder: where it is, and which hub repository and revision it came from ("" for a local one)."""

    path: Path
    repo: str = ""
    revision: str = ""

    @property
    def weights(self) -> Path:
        found = next((self.path / f for f in WEIGHT_FILES if (self.path / f).is_file()), None)
        if found is None:
            raise UserError(f"{self.describe()}: no weights file ({' or '.join(WEIGHT_FILES)}) in {self.path}")
        return found

    def describe(self) -> str:
        return f"hf:{self.repo}" if self.repo else str(self.path)


def download_hint(repo: str) -> str:
    return (f"download it where the hub is reachable (`hf download {repo}`, or huggingface_hub.snapshot_download) "
            "into the cache HF_HOME / HF_HUB_CACHE points at")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_failure(src: str, repo: str, e: Exception) -> UserError:
    """One line for a hub file that cannot be had: not cached while offline, or not reachable."""
    from huggingface_hub import constants

    why = ("is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids a download" if _offline()
           else f"could not be fetched ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})")
    return UserError(f"{src}: {repo} {why} (cache: {constants.HF_HUB_CACHE}); {download_hint(repo)}")


def resolve_folder(src: str) -> ModelFolder:
    """The folder of ``hf:<org>/<repo>[@rev]`` (from the hub cache) or of a local path."""
    parsed = parse_source(src)
    if parsed.kind != HUB:
        return ModelFolder(Path(src))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo, _, revision = parsed.rest.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise UserError(f"{src}: expected hf:<org>/<repo>[@revision], e.g. hf:facebook/vit-mae-base")
    try:
        path = Path(snapshot_download(repo, revision=revision or None,
                                      allow_patterns=["config.json", *WEIGHT_FILES]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        raise hub_failure(src, repo, e) from None
    return ModelFolder(path, repo, path.name)


def transformers_arch(config_file: Path, where: str) -> tuple[dict, list[str]]:
    """The architecture ``config.json`` of a ``transformers`` ViT states (``--arch`` field names), and notes."""
    try:
        cfg = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{where}{config_file} is not readable JSON ({e})") from None
    kind = cfg.get("model_type")
    if kind not in MODEL_TYPES:
        raise UserError(f"{where}a transformers {kind or 'model without model_type'} ({config_file}): the readers read "
                        f"{', '.join(MODEL_TYPES)}; a distilled DeiT or another architecture is a different network "
                        "(for a timm model: timm:<name>.<tag> or hf-hub:<org>/<repo>)")
    width = int(cfg["hidden_size"])
    mlp = cfg.get("mlp_ratio") or int(cfg.get("intermediate_size", 4 * width)) / width
    size = cfg.get("image_size", 224)
    arch = {"embed_dim": width, "depth": int(cfg["num_hidden_layers"]), "num_heads": int(cfg["num_attention_heads"]),
            "patch_size": int(cfg.get("patch_size", 16)), "in_chans": int(cfg.get("num_channels", 3)),
            "mlp_ratio": float(mlp), "img_size": size if isinstance(size, int) else list(size)}
    return arch, [f"architecture from {config_file.name} (transformers {kind})"]


def cached_file(repo: str, revision: str | None = None) -> Path | None:
    """The weights file of ``repo`` that timm read from the hub cache (safetensors first, as timm reads)."""
    from huggingface_hub import try_to_load_from_cache

    for name in WEIGHT_FILES:
        found = try_to_load_from_cache(repo, name, revision=revision)
        if isinstance(found, str):
            return Path(found)
    return None
