"""``Detectron2ConvNeXt``: the pretraining ConvNeXt as a detectron2 backbone, alone or under
detectron2's FPN; ``Detectron2ResNetNano``: the CPU demo's ``resnet_nano`` under detectron2's
``SimpleFeaturePyramid`` (the ViTDet pyramid; see ``build_vicregl_resnet_nano_sfp_backbone``).

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
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone, SimpleFeaturePyramid
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7
from torch import nn

from pretrain.backbones.convnext import CONVNEXT_SPECS, LayerNorm2d, convnext
from pretrain.backbones.resnet import NANO_SPECS, resnet

from .conversion import NANO_PREFIX

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


class Detectron2ResNetNano(Backbone):
    """``resnet_nano`` stage outputs ``res2..res5`` (layer1..layer4) as a detectron2 ``Backbone``.

    The strides are those of the module, 2, 4, 8, 8 (not detectron2's 4..32): it is meant to
    sit under ``SimpleFeaturePyramid``, which reads ``res5`` only. The trunk is the pretraining
    module (``pretrain.backbones.resnet.ResNetNano``) under ``resnet_nano.``, so the converter
    only prefixes its keys and ``checkpoint.check_backbone_loaded`` applies as for ConvNeXt.
    ``norm`` (``MODEL.RESNETS.NORM``, as for detectron2's ResNet) swaps its BatchNorms, keys
    unchanged: ``BN`` keeps them, ``SyncBN`` syncs them, ``FrozenBN`` freezes them all.
    """

    def __init__(self, arch: str = "resnet_nano", out_features=STAGES, norm: str = "BN",
                 freeze_at: int = 0):
        super().__init__()
        if arch not in NANO_SPECS:
            raise ValueError(f"MODEL.RESNET_NANO.ARCH: unknown {arch!r}; expected one of "
                             f"{', '.join(NANO_SPECS)}")
        unknown = [f for f in out_features if f not in STAGES]
        if unknown or not out_features:
            raise ValueError(f"out_features: {list(out_features)}; expected a non-empty subset "
                             f"of {list(STAGES)}")
        trunk = resnet(arch)
        if norm == "SyncBN":
            trunk = nn.SyncBatchNorm.convert_sync_batchnorm(trunk)
        elif norm == "FrozenBN":
            trunk = FrozenBatchNorm2d.convert_frozen_batchnorm(trunk)
        elif norm != "BN":
            raise ValueError(f"MODEL.RESNETS.NORM: {norm!r} cannot hold {arch}'s BatchNorm "
                             "weights; expected BN, SyncBN or FrozenBN")
        setattr(self, NANO_PREFIX.rstrip("."), trunk)
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(STAGES, trunk.stage_channels))
        strides, stride = {}, 2  # the 3x3 stride-2 stem, then the stages' own strides
        for name, step in zip(STAGES, trunk.STRIDES):
            stride *= step
            strides[name] = stride
        self._out_feature_strides = strides
        self.freeze(freeze_at)

    @property
    def trunk(self) -> nn.Module:
        return getattr(self, NANO_PREFIX.rstrip("."))

    def freeze(self, freeze_at: int = 0) -> "Detectron2ResNetNano":
        """detectron2's FREEZE_AT, as for its ResNet: 1 freezes the stem (conv1 + bn1), k >= 2
        also res2..res{k} (layer1..layer{k-1}); frozen BatchNorms become ``FrozenBatchNorm2d``
        (running statistics fixed, same keys)."""
        trunk = self.trunk
        stem = ["conv1", "bn1"] if freeze_at >= 1 else []
        for name in stem + [f"layer{i}" for i in range(1, min(freeze_at, 5))]:
            module = FrozenBatchNorm2d.convert_frozen_batchnorm(getattr(trunk, name))
            module.requires_grad_(False)
            setattr(trunk, name, module)
        return self

    def forward(self, x):
        stages = dict(zip(STAGES, self.trunk.forward_stages(x)))
        return {name: stages[name] for name in self._out_features}

    def output_shape(self):
        return {name: ShapeSpec(channels=self._out_feature_channels[name],
                                stride=self._out_feature_strides[name])
                for name in self._out_features}


# SimpleFeaturePyramid on res5 (stride 8): p2, p3, p4 (strides 4, 8, 16). It builds scale
# factors 4, 2, 1 and 0.5 only (0.25 raises NotImplementedError), so p5 and p6 (strides 32, 64)
# come from its top block, detectron2's LastLevelP6P7 on p4 (stride-2 3x3 convolutions, as
# RetinaNet's P6/P7), which SimpleFeaturePyramid names p5 and p6.
NANO_SFP_SCALE_FACTORS = (2.0, 1.0, 0.5)


@BACKBONE_REGISTRY.register()
def build_vicregl_resnet_nano_sfp_backbone(cfg, input_shape: ShapeSpec):
    """``MODEL.BACKBONE.NAME: build_vicregl_resnet_nano_sfp_backbone``: ``resnet_nano`` (the CPU
    demo's; output stride 8) under detectron2's ``SimpleFeaturePyramid``, giving the P2-P6
    (strides 4-64) of ``build_resnet_fpn_backbone``, so the FPN heads and anchors apply as
    they are. Reads ``MODEL.RESNET_NANO.ARCH``, ``MODEL.RESNETS.NORM`` (trunk),
    ``MODEL.BACKBONE.FREEZE_AT``, ``MODEL.FPN.OUT_CHANNELS`` and ``MODEL.FPN.NORM`` (pyramid)."""
    if input_shape.channels != 3:
        raise ValueError(f"resnet_nano takes 3 input channels, got {input_shape.channels}")
    net = Detectron2ResNetNano(cfg.MODEL.RESNET_NANO.ARCH, ["res5"], cfg.MODEL.RESNETS.NORM,
                               cfg.MODEL.BACKBONE.FREEZE_AT)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return SimpleFeaturePyramid(
        net, "res5", out_channels, NANO_SFP_SCALE_FACTORS,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p4"),
        norm=cfg.MODEL.FPN.NORM)
