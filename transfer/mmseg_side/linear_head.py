"""``LinearProbeHead``: the decode head of the VICRegL linear segmentation protocol.

Per pixel: BatchNorm over the (concatenated) backbone features, dropout, and a 1x1 conv to
the classes: a linear classifier on normalised frozen features. With several stages
(``input_transform='resize_concat'``) every stage is resized bilinearly to the first listed
one (stride 4 for ConvNeXt stages 0..3) and concatenated, as in the official code.

Deviations from the official ``LinearHead``: ``channels`` may be left out (it must equal the
summed input channels, so it is derived); the norm follows ``norm_cfg`` (``SyncBN`` in the
configs, which mmengine turns into BN without a distributed launcher) instead of a hard-coded
SyncBatchNorm.
"""
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS


@MODELS.register_module()
class LinearProbeHead(BaseDecodeHead):
    """BN + dropout (``dropout_ratio``, 0.1 for ResNet, 0 for ConvNeXt) + 1x1 conv.

    Args:
        in_channels: an int with ``in_index`` an int (one stage, e.g. ResNet layer4), or a
            list with ``in_index`` a list and ``input_transform='resize_concat'``.
        channels: optional; must be the summed input channels.
        norm_cfg: the normalisation before the classifier (default BN).
    """

    def __init__(self, in_channels, channels=None, norm_cfg=None, **kwargs):
        total = sum(in_channels) if isinstance(in_channels, (list, tuple)) else in_channels
        if channels is not None and channels != total:
            raise ValueError(f"LinearProbeHead: channels ({channels}) must equal the summed "
                             f"in_channels ({total}); leave it out")
        norm_cfg = norm_cfg or dict(type="BN", requires_grad=True)
        super().__init__(in_channels, total, norm_cfg=norm_cfg, **kwargs)
        self.bn = build_norm_layer(norm_cfg, total)[1]

    def forward(self, inputs):
        return self.cls_seg(self.bn(self._transform_inputs(inputs)))
