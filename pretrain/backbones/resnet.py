"""ResNet backbones: torchvision's modules and key names, without ``fc``.

The official VICRegL ResNet pads by 1 and convolves with padding 2, which is the same zero
padding as torchvision's padding 3, so torchvision's ResNet computes the same function and its
state dicts (318 keys for ResNet-50) load strictly.

``resnet_nano`` is ours, for CPU runs (the demo, the learning tests): a BatchNorm ResNet of
BasicBlocks with 8-16-32-64 channels, a 3x3 stride-2 stem without max-pooling and stages of
stride 1, 2, 2, 1, so its OUTPUT STRIDE IS 8: a 64-pixel crop gives an 8 x 8 local grid, a
32-pixel crop 4 x 4 (a ResNet-18 would give 2 x 2 and 1 x 1). Key names follow torchvision's
(``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so the same converters and checks apply.
"""
import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

RESNET_SPECS = {
    "resnet18": (tv_resnet.BasicBlock, (2, 2, 2, 2)),
    "resnet34": (tv_resnet.BasicBlock, (3, 4, 6, 3)),
    "resnet50": (tv_resnet.Bottleneck, (3, 4, 6, 3)),
    "resnet101": (tv_resnet.Bottleneck, (3, 4, 23, 3)),
}


class ResNet(tv_resnet.ResNet):
    """torchvision ResNet returning (local maps, pooled vector) instead of logits."""

    output_stride = 32

    def __init__(self, block, layers, zero_init_residual: bool = True):
        super().__init__(block, list(layers), zero_init_residual=zero_init_residual)
        del self.fc  # no classification head: keys equal torchvision's minus fc.*
        self.num_features = 512 * block.expansion
        self.stage_channels = tuple(64 * 2**i * block.expansion for i in range(4))

    @staticmethod
    def feature_size(input_size: int) -> int:
        """Side of the local grid for a square input: five stride-2 stages, each rounding up."""
        for _ in range(5):
            input_size = (input_size + 1) // 2
        return input_size

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            stages.append(x)
        return stages

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.forward_stages(x)[-1]
        pooled = torch.flatten(self.avgpool(x), 1)
        return x.flatten(2).transpose(1, 2), pooled


class ResNetNano(ResNet):
    """``resnet_nano``: output stride 8 (stem /2, stages 1, 2, 2, 1), one BasicBlock per
    stage of 8, 16, 32, 64 channels; torchvision's initialisation and key names."""

    output_stride = 8
    WIDTHS = (8, 16, 32, 64)
    STRIDES = (1, 2, 2, 1)

    def __init__(self, zero_init_residual: bool = True):
        # skip torchvision's __init__ (it hard-codes 64-wide stages) but keep the MRO after it
        # (mmseg's subclass reaches mmengine's BaseModule.__init__ this way)
        super(tv_resnet.ResNet, self).__init__()
        block, widths = tv_resnet.BasicBlock, self.WIDTHS
        self._norm_layer, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, 1, 1, 64
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()  # no max-pooling: the grid stays fine
        for i, (width, stride) in enumerate(zip(widths, self.STRIDES)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, width, 1, stride=stride))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, tv_resnet.BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)
        self.num_features = widths[-1]
        self.stage_channels = widths

    @staticmethod
    def feature_size(input_size: int) -> int:
        """Side of the local grid: three stride-2 convolutions (stem, layer2, layer3)."""
        for _ in range(3):
            input_size = (input_size + 1) // 2
        return input_size


# Architectures built by a class of their own rather than torchvision's ResNet(block, layers)
NANO_SPECS = {"resnet_nano": ResNetNano}


def backbone_class(arch: str) -> type:
    """The class that builds ``arch`` (for its static ``feature_size``)."""
    return NANO_SPECS.get(arch, ResNet)


def resnet(arch: str, zero_init_residual: bool = True) -> ResNet:
    if arch in NANO_SPECS:
        model = NANO_SPECS[arch](zero_init_residual=zero_init_residual)
    else:
        block, layers = RESNET_SPECS[arch]
        model = ResNet(block, layers, zero_init_residual=zero_init_residual)
    model.arch = arch
    return model
