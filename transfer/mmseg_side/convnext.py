"""``VICRegLConvNeXt``: the pretraining ConvNeXt as an mmseg backbone.

It IS ``pretrain.backbones.convnext.ConvNeXt`` (a subclass adding mmengine's ``BaseModule``
for ``init_cfg``), so the keys are the official ones and the stage outputs are bit for bit
the pretraining module's ``forward_stages``: no layer scale (a backbone built with
mmpretrain's default layer scale would silently compute other features), raw stage outputs
without extra norms, as the official segmentation code uses them.

Deviation from mmpretrain's ConvNeXt: the final ``norm`` (used by pretraining's pooled output
only) is kept so the checkpoint loads strictly, but never used here and never trained.
"""
import copy

from mmengine.model import BaseModule
from mmseg.registry import MODELS

from pretrain.backbones.convnext import CONVNEXT_SPECS, ConvNeXt
from transfer.mmseg_side.frozen_stages import FrozenStagesMixin


@MODELS.register_module()
class VICRegLConvNeXt(FrozenStagesMixin, ConvNeXt, BaseModule):
    """ConvNeXt returning the stage outputs ``out_indices`` (stride 4, 8, 16, 32).

    Args:
        arch: official name, ``convnext_small`` etc. (``convnext_mini`` for tests).
        out_indices: stages to return, in order.
        frozen_stages: freeze (no gradient, eval mode) the first N stages with their
            downsampling layers; 4 freezes everything (the frozen linear protocol), -1 (or 0)
            fine-tunes everything.
        drop_path_rate: stochastic depth when trained (0.1 in pretraining; the UPerNet recipe
            uses 0.3 for ConvNeXt-S and 0.4 for ConvNeXt-B). Frozen stages run in eval mode,
            where drop path is off.
        init_cfg: ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
    """

    def __init__(self, arch: str = "convnext_small", out_indices=(0, 1, 2, 3),
                 frozen_stages: int = -1, drop_path_rate: float = 0.1, init_cfg=None):
        if arch not in CONVNEXT_SPECS:
            raise ValueError(f"unknown ConvNeXt {arch!r}; expected one of "
                             f"{', '.join(CONVNEXT_SPECS)}")
        if not all(0 <= i < 4 for i in out_indices):
            raise ValueError(f"out_indices must be stage indices in 0..3, got {out_indices}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        depths, dims = CONVNEXT_SPECS[arch]
        # ConvNeXt.__init__ reaches BaseModule.__init__ through the MRO (with init_cfg=None).
        super().__init__(depths, dims, drop_path_rate=drop_path_rate, layer_scale_init_value=0.0)
        self.init_cfg = copy.deepcopy(init_cfg)
        self.arch = arch
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm.requires_grad_(False)  # unused here; DDP must not wait for its gradient
        self._freeze_stages()

    def _frozen_modules(self):
        for i in range(max(self.frozen_stages, 0)):
            yield from (self.downsample_layers[i], self.stages[i])
