from .vit import VisionTransformer, build_vit, vit_arch_args, VIT_SIZES

__all__ = ["VisionTransformer", "build_vit", "vit_arch_args", "VIT_SIZES"]
