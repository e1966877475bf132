"""Backbones with the official VICRegL key names.

Every backbone is an ``nn.Module`` with
  - ``forward(x) -> (maps, pooled)``: ``maps`` (B, H*W, C) local feature vectors, row-major,
    and ``pooled`` (B, C) the global representation, exactly as the official code returns them;
  - ``forward_stages(x) -> list[Tensor]``: the four stage outputs (B, C_s, H_s, W_s), used by
    the transfer adapters;
  - ``num_features`` (C), ``stage_channels`` and ``output_stride`` (32, or 8 for
    ``resnet_nano``), and the static ``feature_size(crop_size)``: the side of the local grid,
    about ``crop_size / output_stride`` (each family rounds its own way).

The grid side of an architecture and crop size is ``feature_size(arch, crop_size)`` below
(the configuration check, the augmentation's location grids and the benchmark all ask it).
"""
from .convnext import CONVNEXT_SPECS, ConvNeXt, convnext
from .resnet import NANO_SPECS, RESNET_SPECS, ResNet, backbone_class, resnet

ARCHS = tuple(RESNET_SPECS) + tuple(NANO_SPECS) + tuple(CONVNEXT_SPECS)


def build_backbone(arch: str, drop_path_rate: float = 0.1, layer_scale_init_value: float = 0.0,
                   zero_init_residual: bool = True):
    """Build a backbone by its official name (``resnet50``, ``convnext_small``, ...)."""
    if arch in RESNET_SPECS or arch in NANO_SPECS:
        return resnet(arch, zero_init_residual=zero_init_residual)
    if arch in CONVNEXT_SPECS:
        return convnext(arch, drop_path_rate=drop_path_rate,
                        layer_scale_init_value=layer_scale_init_value)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")


def _class_of(arch: str) -> type:
    return ConvNeXt if arch in CONVNEXT_SPECS else backbone_class(arch)


def feature_size(arch: str, input_size: int) -> int:
    """The local grid side of ``arch`` for a square ``input_size`` crop, without building it."""
    return _class_of(arch).feature_size(input_size)


def output_stride(arch: str) -> int:
    return _class_of(arch).output_stride


def norm_kind(arch: str) -> str:
    """The head normalisation the official code pairs with a backbone family."""
    return "layer_norm" if arch in CONVNEXT_SPECS else "batch_norm"


__all__ = ["ARCHS", "build_backbone", "feature_size", "norm_kind", "output_stride", "ConvNeXt", "ResNet",
           "CONVNEXT_SPECS", "NANO_SPECS", "RESNET_SPECS"]
