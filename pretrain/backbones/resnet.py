"""ResNet backbones: torchvision's modules and key names, without ``fc``.

The official VICRegL ResNet pads by 1 and convolves with padding 2, which is the same zero
padding as torchvision's padding 3, so torchvision's ResNet computes the same function and its
state dicts (318 keys for ResNet-50) load strictly.
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


def resnet(arch: str, zero_init_residual: bool = True) -> ResNet:
    block, layers = RESNET_SPECS[arch]
    model = ResNet(block, layers, zero_init_residual=zero_init_residual)
    model.arch = arch
    return model
