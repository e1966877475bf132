"""The mmseg backbones compute exactly what the pretraining backbones compute.

Weights travel the real path: a state dict file -> transfer.weights.read_backbone ->
the mmseg checkpoint seg_train converts into its work dir -> the config's backbone with a
Pretrained init_cfg -> mmengine's init_weights. Random weights have every BatchNorm perturbed: with the default
zero-initialised last BN of each block, the residual branches would vanish and a wrong
dilation would go unnoticed.
"""
from pathlib import Path

import pytest
import torch
import torchvision

pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402

import transfer.mmseg_side.register  # noqa: E402,F401
from pretrain.backbones import build_backbone  # noqa: E402
from transfer.conversion import convert_into  # noqa: E402
from transfer.mmseg_side.checkpoint import verify_backbone  # noqa: E402
from transfer.weights import read_backbone  # noqa: E402
from conftest import THREADS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "segmentation"
init_default_scope("mmseg")
torch.set_num_threads(THREADS)


def perturbed_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """A seeded random backbone whose norm layers are not at their initial values."""
    state = read_backbone(f"random:{seed}", arch).state_dict
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if value.is_floating_point() and value.ndim == 1:  # BN / LayerNorm parameters
            if key.endswith(("weight", "running_var")):
                value = torch.rand(value.shape, generator=gen) + 0.5
            else:
                value = torch.randn(value.shape, generator=gen) * 0.1
        out[key] = value
    return out


def converted(tmp_path: Path, arch: str, seed: int = 0) -> tuple[Path, dict]:
    source = tmp_path / f"{arch}_state.pth"
    torch.save(perturbed_state(arch, seed), source)
    result = convert_into(str(source), arch, tmp_path / "run", "mmseg")  # what seg_train does
    return result.path, result.weights.state_dict


def build_from_config(name: str, checkpoint: Path, **backbone):
    cfg = Config.fromfile(CONFIGS / name)
    cfg.model.backbone.update(backbone)
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(checkpoint),
                                       prefix="backbone.")
    return cfg, MODELS.build(cfg.model)


def reference(arch: str, state: dict) -> torch.nn.Module:
    model = build_backbone(arch)
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_convnext_stages_equal_pretraining_module(tmp_path):
    checkpoint, state = converted(tmp_path, "convnext_mini", seed=1)
    cfg, model = build_from_config("linear_convnext_small_voc12aug_40k.py", checkpoint,
                                   arch="convnext_mini")
    model.init_weights()
    print(verify_backbone(model.backbone, state, str(checkpoint)))
    model.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours = model.extract_feat(x)
        expected = reference("convnext_mini", state).forward_stages(x)
    assert len(ours) == 4
    for a, b in zip(ours, expected):
        assert a.shape == b.shape and torch.equal(a, b)


def test_resnet_nano_stages_equal_pretraining_module(tmp_path):
    """The demo's resnet_nano through the linear config with VICRegLResNet: the four stages
    (strides 2, 4, 8, 8) bit for bit, BatchNorm statistics from the file."""
    checkpoint, state = converted(tmp_path, "resnet_nano", seed=3)
    cfg, model = build_from_config("linear_convnext_small_voc12aug_40k.py", checkpoint,
                                   type="VICRegLResNet", arch="resnet_nano")
    model.init_weights()
    verify_backbone(model.backbone, state, str(checkpoint))
    model.train()  # the frozen stages stay in eval mode
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours = model.extract_feat(x)
        expected = reference("resnet_nano", state).forward_stages(x)
    assert [a.shape[-2:] for a in ours] == [(32, 48), (16, 24), (8, 12), (8, 12)]
    for a, b in zip(ours, expected):
        assert torch.equal(a, b)


def test_resnet_output_stride_32_equals_pretraining_module(tmp_path):
    checkpoint, state = converted(tmp_path, "resnet18", seed=2)
    backbone = MODELS.build(dict(type="ResNet", depth=18, style="pytorch", init_cfg=dict(
        type="Pretrained", checkpoint=str(checkpoint), prefix="backbone.")))
    backbone.init_weights()
    backbone.eval()  # mmseg's ResNet.train() returns None: do not chain it
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(backbone(x), reference("resnet18", state).forward_stages(x)):
            assert torch.equal(a, b)


@pytest.mark.slow
def test_resnet50_output_stride_8_equals_torchvision_dilated(tmp_path):
    """The linear config's dilated ResNet-50 = torchvision's replace_stride_with_dilation
    with the same weights; without contract_dilation it would not be."""
    checkpoint, state = converted(tmp_path, "resnet50", seed=3)
    cfg, model = build_from_config("linear_resnet50_voc12aug_40k.py", checkpoint)
    model.init_weights()
    model.eval()
    tv = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    tv.load_state_dict({**state, "fc.weight": tv.fc.weight, "fc.bias": tv.fc.bias})
    tv.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.extract_feat(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        expected = []
        for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
            y = layer(y)
            expected.append(y)
    assert ours[3].shape[-2:] == (8, 8)  # output stride 8
    for a, b in zip(ours, expected):
        assert torch.equal(a, b)
    plain = dict(cfg.model.backbone, contract_dilation=False, init_cfg=None)
    uncontracted = MODELS.build(plain)
    uncontracted.load_state_dict(state)
    uncontracted.eval()
    with torch.no_grad():
        assert not torch.allclose(uncontracted(x)[3], expected[3])


@pytest.mark.parametrize("config,arch", [
    ("linear_resnet50_voc12aug_40k.py", dict(depth=18)),
    ("linear_convnext_small_voc12aug_40k.py", dict(arch="convnext_mini")),
    ("linear_convnext_small_voc12aug_40k.py", dict(type="VICRegLResNet", arch="resnet_nano")),
])
def test_linear_protocol_freezes_the_backbone(config, arch):
    cfg = Config.fromfile(CONFIGS / config)
    cfg.model.backbone.update(arch)
    cfg.model.decode_head.in_channels = ([8, 16, 32, 64] if arch.get("arch") == "resnet_nano"
                                         else [16, 32, 64, 128] if "arch" in arch else 512)
    model = MODELS.build(cfg.model)
    model.train()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(m.training for m in model.backbone.modules()
                   if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    assert all(p.requires_grad for p in model.decode_head.parameters())
    x = torch.randn(2, 3, 64, 64)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    first = model.extract_feat(x)  # training mode: no BN statistics update, no drop path
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(first, model.extract_feat(x)))


def test_convnext_fine_tuning_trains_all_but_the_unused_norm():
    model = MODELS.build(dict(type="VICRegLConvNeXt", arch="convnext_mini", frozen_stages=-1))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if not n.startswith("norm.")}
    half = MODELS.build(dict(type="VICRegLConvNeXt", arch="convnext_mini", frozen_stages=2))
    half.train()
    assert not half.stages[1].training and half.stages[2].training
    assert not any(p.requires_grad for p in half.downsample_layers[1].parameters())


def test_linear_head_concatenates_resized_stages():
    head = MODELS.build(dict(type="LinearProbeHead", in_channels=[16, 32, 64, 128],
                             in_index=[0, 1, 2, 3], input_transform="resize_concat",
                             dropout_ratio=0.0, num_classes=5))
    assert head.channels == 240 and head.bn.num_features == 240
    assert head.conv_seg.in_channels == 240 and head.conv_seg.kernel_size == (1, 1)
    feats = [torch.randn(2, c, 16 // 2**i, 24 // 2**i) for i, c in enumerate([16, 32, 64, 128])]
    assert head(feats).shape == (2, 5, 16, 24)
    with pytest.raises(ValueError, match="must equal the summed in_channels"):
        MODELS.build(dict(type="LinearProbeHead", in_channels=[16, 32], in_index=[0, 1],
                          input_transform="resize_concat", channels=16, num_classes=5))
