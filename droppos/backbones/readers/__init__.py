"""The release layouts a ViT backbone is read from: recognised from content, renamed to our keys.

Each module registers its readers once (:mod:`.registry`: what a reader recognises, its order, its
family's head table); importing this package imports them all. The table is in recognition order.

| layout        | module          | recognised by                                                 | dropped                        |
|---------------|-----------------|---------------------------------------------------------------|--------------------------------|
| ``encoder``   | ``project``     | ``format: droppos-bench/encoder/v1``                          | –                              |
| ``checkpoint``| ``project``     | ``meta`` + ``model`` with ``encoder.*``                       | pretext heads                  |
| ``dino``      | ``dino``        | ``teacher``/``student`` (DINO, iBOT full checkpoints)         | DINO/iBOT head, ``masked_embed``|
| ``mmseg``     | ``engine_files``| mmseg ``MAE`` names (``patch_embed.projection``, ``layers.N.ln1``) | heads; zero rel. bias; LS folded |
| ``mocov3``    | ``mocov3``      | ``state_dict`` with ``module.base_encoder.*``                 | projector, momentum, predictor |
| ``droppos``   | ``official``    | ``state_dict`` + a string ``model``, or official pretext keys | pretext (decoders, tokens)     |
| ``ibot``      | ``dino``        | ``state_dict`` = a timm ViT (+ ``masked_embed``)              | ``masked_embed`` (pretext)     |
| ``detectron2``| ``engine_files``| ``model`` with ``backbone.net.*`` (ViTDet)                    | refused: no [cls], no norm     |
| ``mae``       | ``official``    | ``model`` with ``decoder_*``/``mask_token`` or MAE ``args``    | pretext (decoder, mask token)  |
| ``deit``      | ``timm_names``  | ``model`` = a timm ViT (DeiT, MAE encoder-only, MoCo v3 DeiT)  | ``head.*`` (kept as the head)  |
| ``hf``        | ``hf``          | ``embeddings.patch_embeddings.projection.*`` (``vit.``)        | ``pooler.*``, MAE decoder      |
| ``dino_net``  | ``dino``        | flat ``backbone.*`` (+ ``module.``): one DINO/iBOT network alone | its head, ``masked_embed``     |
| ``torchvision``| ``torchvision``| ``conv_proj.*`` + ``class_token``                             | ``heads.*`` (kept as the head) |
| ``dinov2``    | ``dinov2``      | layer scale ``ls1.gamma`` / ``register_tokens``               | ``mask_token``; LS folded      |
| ``timm``      | ``timm_names``  | a flat timm ViT state dict (DINO backbone files too)          | ``head.*`` (kept as the head)  |
| ``augreg``    | ``augreg``      | a ``.npz`` file (read by timm's ``_load_weights``)             | ``head.*`` (kept as the head)  |

Networks that are not a plain ViT (Swin, ConvNeXt, ResNet; BEiT/data2vec relative position bias,
EVA RoPE/SwiGLU, CLIP pre-norm, SigLIP attention pooling, qk-norm) are refused by
:func:`.common.refuse_unrepresentable` with one line naming the network and the generic
``timm:<model>:FILE`` source that reads it.
"""

from . import augreg, dino, dinov2, engine_files, hf, mocov3, official, project, timm_names, torchvision  # noqa: F401 (registers)
from .registry import FAMILY_HEADS, PARTS, READERS, Raw, Reader, by_suffix, detect_layout, formats, heads_for

__all__ = ["FAMILY_HEADS", "PARTS", "READERS", "Raw", "Reader", "by_suffix", "detect_layout", "formats", "heads_for"]
