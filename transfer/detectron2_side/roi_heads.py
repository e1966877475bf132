"""``Res5ROIHeadsExtraNorm``: the C4 box/mask head of the self-supervised protocols.

As in MoCo's detection recipe: detectron2's ``Res5ROIHeads`` with one more normalisation layer
(``MODEL.RESNETS.NORM``, SyncBN in our configs) after the res5 stage. Self-supervised features
are not scaled like supervised ones; the extra norm puts them on the scale the box and mask
predictors expect.

Extension: detectron2 builds res5 from three bottleneck blocks whatever the depth; here
ResNet-18/34 get their own res5 (BasicBlocks, 2 or 3 of them), so their converted res5 weights
load too (the CPU tests use ResNet-18). Depth 50 and more build exactly detectron2's res5.
"""
from detectron2.layers import get_norm
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet
from detectron2.modeling.roi_heads import Res5ROIHeads
from torch import nn

_BASIC_RES5_BLOCKS = {18: 2, 34: 3}


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    @classmethod
    def _build_res5_block(cls, cfg):
        depth = cfg.MODEL.RESNETS.DEPTH
        if depth in _BASIC_RES5_BLOCKS:
            out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * 8
            blocks = ResNet.make_stage(
                BasicBlock, _BASIC_RES5_BLOCKS[depth],
                stride_per_block=[2] + [1] * (_BASIC_RES5_BLOCKS[depth] - 1),
                in_channels=out_channels // 2, out_channels=out_channels,
                norm=cfg.MODEL.RESNETS.NORM)
            seq = nn.Sequential(*blocks)
        else:
            seq, out_channels = super()._build_res5_block(cfg)
        seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return seq, out_channels
