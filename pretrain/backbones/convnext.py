"""ConvNeXt (v1) with the official Facebook key names and the VICRegL choices.

Differences from the original ConvNeXt classifier, all as in the official VICRegL code:
no head, no layer scale by default (``layer_scale_init_value=0``: no ``gamma`` keys), drop path
0.1, and the final LayerNorm is applied to every position: the local features are the
normalised tokens and the global feature is their mean (the original pools, then normalises).
"""
import torch
import torch.nn.functional as F
from torch import nn

# name: (depths, dims). ``convnext_mini`` is ours: small enough for CPU tests and the demo.
CONVNEXT_SPECS = {
    "convnext_mini": ((1, 1, 2, 1), (16, 32, 64, 128)),
    "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "convnext_large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "convnext_xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample, drawing its noise as timm 0.3.2 (the official code's) does."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    noise = keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
    return x.div(keep) * noise.floor_()


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (the official ``channels_first`` mode)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Block(nn.Module):
    def __init__(self, dim: int, drop_path_rate: float, layer_scale_init_value: float):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (nn.Parameter(torch.full((dim,), layer_scale_init_value))
                      if layer_scale_init_value > 0 else None)
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + drop_path(y.permute(0, 3, 1, 2), self.drop_path_rate, self.training)


class ConvNeXt(nn.Module):
    output_stride = 32

    def __init__(self, depths, dims, drop_path_rate: float = 0.1,
                 layer_scale_init_value: float = 0.0):
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(3, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(dims[i], eps=1e-6), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)))
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            self.stages.append(nn.Sequential(*[
                Block(dims[i], rates[first + j], layer_scale_init_value) for j in range(depth)]))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.num_features = dims[-1]
        self.stage_channels = tuple(dims)
        self.apply(_init_weights)

    @staticmethod
    def feature_size(input_size: int) -> int:
        """Side of the local grid for a square input: a stride-4 stem, three stride-2 layers."""
        return input_size // 4 // 2 // 2 // 2

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        stages = []
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
            stages.append(x)
        return stages

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.forward_stages(x)[-1]
        maps = self.norm(x.flatten(2).transpose(1, 2))
        return maps, maps.mean(dim=1)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)


def convnext(arch: str, drop_path_rate: float = 0.1,
             layer_scale_init_value: float = 0.0) -> ConvNeXt:
    depths, dims = CONVNEXT_SPECS[arch]
    model = ConvNeXt(depths, dims, drop_path_rate, layer_scale_init_value)
    model.arch = arch
    return model
