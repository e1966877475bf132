"""``Detectron2ConvNeXt``: the pretraining ConvNeXt as a detectron2 backbone, alone or under
detectron2's FPN.

The trunk is the module pretraining trains (``pretrain.backbones.convnext``) under
``convnext.``, so a checkpoint's keys need only that prefix. Its weights are loaded like the
ResNet's: ``conversion.convert_convnext`` writes them to a ``.pkl``, detectron2's checkpointer
loads it as ``MODEL.WEIGHTS``, and ``checkpoint.check_backbone_loaded`` proves every tensor
landed and no trunk tensor was left out. Built without weights, the trunk is randomly
initialised until the checkpointer loads.

Deviations from the pretraining module, both as in ConvNeXt's own detection backbone:
- the final LayerNorm (``norm.*``, applied to the last stage's tokens in pretraining) is
  removed: detection uses the four stage maps (the converter drops it, after the strict reader
  has checked it is in the file);
- with ``OUT_NORM`` each output gets a fresh channel LayerNorm (weight 1, bias 0).
"""
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torch import nn

from pretrain.backbones.convnext import CONVNEXT_SPECS, LayerNorm2d, convnext

STAGES = ("res2", "res3", "res4", "res5")


class Detectron2ConvNeXt(Backbone):
    """ConvNeXt stage outputs ``res2..res5`` (strides 4..32) as a detectron2 ``Backbone``."""

    def __init__(self, arch: str, out_features=STAGES, drop_path_rate: float = 0.0,
                 out_norm: bool = True, freeze_at: int = 0):
        super().__init__()
        if arch not in CONVNEXT_SPECS:
            raise ValueError(f"MODEL.CONVNEXT.ARCH: unknown {arch!r}; expected one of "
                             f"{', '.join(CONVNEXT_SPECS)}")
        unknown = [f for f in out_features if f not in STAGES]
        if unknown or not out_features:
            raise ValueError(f"MODEL.CONVNEXT.OUT_FEATURES: {list(out_features)}; expected a "
                             f"non-empty subset of {list(STAGES)}")
        self.convnext = convnext(arch, drop_path_rate=drop_path_rate)
        del self.convnext.norm  # pretraining's token norm; see the module docstring
        self._out_features = list(out_features)
        channels = self.convnext.stage_channels
        self._out_feature_channels = {name: channels[i] for i, name in enumerate(STAGES)}
        self._out_feature_strides = {name: 4 * 2**i for i, name in enumerate(STAGES)}
        self.out_norms = nn.ModuleDict({
            name: LayerNorm2d(channels[STAGES.index(name)], eps=1e-6)
            for name in self._out_features} if out_norm else {})
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int = 0) -> "Detectron2ConvNeXt":
        """detectron2's FREEZE_AT: 1 freezes the stem (patchify conv + norm), k >= 2 also
        res2..res{k} (LayerNorm has no running statistics, so no FrozenBN swap is needed)."""
        parts = [self.convnext.downsample_layers[0], self.convnext.stages[0]]
        for i in range(1, 4):
            parts.append(nn.ModuleList([self.convnext.downsample_layers[i],
                                        self.convnext.stages[i]]))
        for part in parts[:freeze_at]:
            for p in part.parameters():
                p.requires_grad_(False)
        return self

    def forward(self, x):
        stages = dict(zip(STAGES, self.convnext.forward_stages(x)))
        return {name: self.out_norms[name](stages[name]) if name in self.out_norms
                else stages[name] for name in self._out_features}

    @property
    def size_divisibility(self) -> int:
        return 32

    def output_shape(self):
        return {name: ShapeSpec(channels=self._out_feature_channels[name],
                                stride=self._out_feature_strides[name])
                for name in self._out_features}


def _from_config(cfg) -> Detectron2ConvNeXt:
    c = cfg.MODEL.CONVNEXT
    return Detectron2ConvNeXt(c.ARCH, c.OUT_FEATURES, c.DROP_PATH_RATE, c.OUT_NORM,
                              cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_vicregl_convnext_backbone(cfg, input_shape: ShapeSpec):
    """``MODEL.BACKBONE.NAME: build_vicregl_convnext_backbone``: the trunk alone."""
    if input_shape.channels != 3:
        raise ValueError(f"ConvNeXt takes 3 input channels, got {input_shape.channels}")
    return _from_config(cfg)


@BACKBONE_REGISTRY.register()
def build_vicregl_convnext_fpn_backbone(cfg, input_shape: ShapeSpec):
    """``MODEL.BACKBONE.NAME: build_vicregl_convnext_fpn_backbone``: the trunk under
    detectron2's FPN (P2-P6, as ``build_resnet_fpn_backbone``)."""
    if input_shape.channels != 3:
        raise ValueError(f"ConvNeXt takes 3 input channels, got {input_shape.channels}")
    bottom_up = _from_config(cfg)
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES,
               out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM,
               top_block=LastLevelMaxPool(), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
