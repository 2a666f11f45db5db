"""Stand-ins for what a cluster run reads, for the rehearsal: random weights in a release's own file layout.

A rehearsal (:mod:`.rehearse`) must not need the downloaded checkpoints, nor the data sets: its data
are built by ``droppos data`` in the real layouts (ImageFolder, COCO 2017 JSON, ADE20K) at the real
resolution, and a checkpoint the spec names but this machine lacks is written here with random
weights in the layout its ``from:`` names (read from the releases' save code; see the readers):

* ``mae``, ``deit``: ``{"model": state_dict}`` of timm ViT keys (MAE's encoder only; DeiT with its head);
* ``droppos``: ``{"epoch", "optimizer", "model": <model name>, "state_dict": {"module.*": ...}}`` with the
  pretext weights beside the encoder;
* ``timm``: a flat ``.safetensors`` (or ``.pth``) of a timm ViT with its head;
* ``encoder``: this project's ``encoder.pth``.

The architecture comes from the spec's ``arch:`` (a timm model name) or else from the file name
(``vit_base``/``vit_large``, ``_b16``/``_l16``, ``base``/``large``...). The readers then read these
files exactly as they read the releases, so the rehearsal exercises the same conversion path.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from droppos.errors import UserError

#: sizes a file name can say, and the timm model of each at patch 16, 224 px
SIZES = {"tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224", "base": "vit_base_patch16_224",
         "large": "vit_large_patch16_224", "huge": "vit_huge_patch14_224"}
_NAME = re.compile(r"(?:^|[_\-./])(?:vit[_\-]?)?(tiny|small|base|large|huge|[tsblh](?=16|14|8|32))(?:[_\-./\d]|$)",
                   re.IGNORECASE)
_LETTER = {"t": "tiny", "s": "small", "b": "base", "l": "large", "h": "huge"}
WRITABLE = ("mae", "deit", "droppos", "timm", "encoder")


def timm_name(path: str, arch: str | None) -> str:
    """The timm model a synthetic file of ``path`` is made of: ``arch`` when it names one, else the size in the
    file name; one line when neither says."""
    if arch and not arch.startswith("vit_") and "=" in arch:
        arch = None  # --arch key=value overrides: not a model name
    if arch:
        return arch
    m = _NAME.search(Path(path).name)
    if m is None:
        raise UserError(f"{path}: the rehearsal writes a stand-in for this missing checkpoint, but its size cannot be "
                        "told from its name; give the spec backbone 'arch: vit_base_patch16_224' (a timm model name)")
    size = m.group(1).lower()
    return SIZES[_LETTER.get(size, size)]


def write_checkpoint(path: str | Path, fmt: str, arch: str | None = None, seed: int = 0) -> str:
    """Write random weights in ``fmt``'s layout at ``path``; returns the timm model it is made of."""
    import timm

    from droppos.utils.checkpoint import atomic_save

    path = Path(path)
    if fmt not in WRITABLE:
        raise UserError(f"{path}: the rehearsal cannot write a stand-in in the '{fmt}' layout (it writes "
                        f"{', '.join(WRITABLE)}); put the checkpoint there, or rehearse with a backbone of those layouts")
    name = timm_name(str(path), arch)
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    encoder = {k: v for k, v in sd.items() if not k.startswith(("head.", "fc_norm."))}
    d = model.embed_dim
    if fmt == "mae":
        obj = {"model": encoder}
    elif fmt == "deit":
        obj = {"model": sd}
    elif fmt == "droppos":
        pretext = {"mask_pos_token": torch.zeros(1, 1, d), "mask_token": torch.zeros(1, 1, 512),
                   "decoder_embed.weight": torch.randn(512, d) * 0.02, "decoder_embed.bias": torch.zeros(512)}
        obj = {"epoch": 799, "optimizer": {}, "model": f"DropPos_mae_{name.rsplit('_', 1)[0]}_dec512d2b",
               "state_dict": {f"module.{k}": v for k, v in {**encoder, **pretext}.items()}}
    elif fmt == "encoder":
        from droppos.utils.checkpoint import save_encoder

        arch_args = {"img_size": model.patch_embed.img_size[0], "patch_size": model.patch_embed.patch_size[0],
                     "embed_dim": d, "depth": len(model.blocks), "num_heads": model.blocks[0].attn.num_heads,
                     "mlp_ratio": model.blocks[0].mlp.fc1.out_features / d}
        save_encoder(path, encoder, {"method": "unknown", "arch": arch_args})
        return name
    else:  # timm
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
            return name
        obj = sd
    atomic_save(obj, path)
    return name
