"""``VICRegLResNet``: the pretraining ``resnet_nano`` as an mmseg backbone (the CPU demo).

The official ResNets go through mmseg's own ``ResNet`` (torchvision key names); mmseg has no
ResNet of 8-64 channels with a 3x3 stride-2 stem and output stride 8, so ``resnet_nano`` is
the pretraining module itself (``pretrain.backbones.resnet.ResNetNano``) with mmengine's
``BaseModule`` for ``init_cfg``: the keys are the pretraining ones and the stage outputs are
bit for bit its ``forward_stages``. Frozen stages run in eval mode (BatchNorm running
statistics, as mmseg's ``frozen_stages`` + ``norm_eval``).
"""
import copy

from mmengine.model import BaseModule
from mmseg.registry import MODELS

from pretrain.backbones.resnet import NANO_SPECS, ResNetNano
from transfer.mmseg_side.frozen_stages import FrozenStagesMixin


@MODELS.register_module()
class VICRegLResNet(FrozenStagesMixin, ResNetNano, BaseModule):
    """``resnet_nano`` returning the stage outputs ``out_indices`` (stride 2, 4, 8, 8).

    Args:
        arch: ``resnet_nano``.
        out_indices: stages to return, in order.
        frozen_stages: freeze (no gradient, eval mode) the stem and the first N stages; 4
            freezes everything (the frozen linear protocol), -1 (or 0) fine-tunes all but
            nothing of the stem.
        init_cfg: ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
    """

    def __init__(self, arch: str = "resnet_nano", out_indices=(0, 1, 2, 3),
                 frozen_stages: int = -1, init_cfg=None):
        if arch not in NANO_SPECS:
            raise ValueError(f"VICRegLResNet builds {', '.join(NANO_SPECS)}, not {arch!r} "
                             "(the official ResNets use mmseg's type='ResNet')")
        if not all(0 <= i < 4 for i in out_indices):
            raise ValueError(f"out_indices must be stage indices in 0..3, got {out_indices}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        super().__init__()  # ResNetNano.__init__ reaches BaseModule.__init__ through the MRO
        self.init_cfg = copy.deepcopy(init_cfg)
        self.arch = arch
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self._freeze_stages()

    def _frozen_modules(self):
        if self.frozen_stages > 0:
            yield from (self.conv1, self.bn1)
        for i in range(max(self.frozen_stages, 0)):
            yield getattr(self, f"layer{i + 1}")
