"""Official checkpoints load strictly, with weights_only, in every documented form."""
import sys
import types

import pytest
import torch
from torchvision.models import resnet18

from pretrain.official import build_from_official_args, load_official_checkpoint

ARGS = dict(arch="resnet18", mlp="64-64-64", maps_mlp="32-32-32", num_classes=10)


def official_full_checkpoint(model, drop=()):
    state = {f"module.{k}": v for k, v in model.state_dict().items()
             if not any(k.startswith(d) for d in drop)}
    return {"epoch": 7, "model": state, "optimizer": {"state": {}, "param_groups": []}}


def test_full_checkpoint_roundtrip(tmp_path):
    src = build_from_official_args(ARGS)
    path = tmp_path / "model.pth"
    torch.save(official_full_checkpoint(src), path)
    dst = build_from_official_args(ARGS)
    report = load_official_checkpoint(dst, path)
    assert report.kind == "full" and not report.skipped_modules
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k


def test_backbone_only_and_torchvision_layout(tmp_path):
    tv = resnet18()
    state = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = build_from_official_args(ARGS)
    assert load_official_checkpoint(model, path).kind == "backbone"
    x = torch.randn(2, 3, 64, 64)
    tv.eval(), model.eval()
    with torch.no_grad():
        reference = torch.flatten(tv.avgpool(tv.layer4(tv.layer3(tv.layer2(tv.layer1(
            tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))), 1)
        assert torch.allclose(model.backbone(x)[1], reference)


def test_released_resnet_fullckpt_without_maps_projector_loads(tmp_path):
    """resnet50_alpha0.75_fullckpt has no maps_projector (official issue #13)."""
    src = build_from_official_args(ARGS)
    path = tmp_path / "fullckpt.pth"
    torch.save(official_full_checkpoint(src, drop=("maps_projector",)), path)
    report = load_official_checkpoint(build_from_official_args(ARGS), path)
    assert report.skipped_modules == ["maps_projector"]
    assert "maps_projector" in str(report)


def test_lars_checkpoint_with_pickled_filters_loads_weights_only(tmp_path):
    """The official LARS pickles functions in its param groups; weights_only must still work,
    and only for those names."""
    fake = types.ModuleType("optimizers")

    def exclude_bias_and_norm(p):
        return p.ndim == 1

    exclude_bias_and_norm.__module__ = "optimizers"
    exclude_bias_and_norm.__qualname__ = "exclude_bias_and_norm"
    fake.exclude_bias_and_norm = exclude_bias_and_norm
    sys.modules["optimizers"] = fake
    try:
        src = build_from_official_args(ARGS)
        ckpt = official_full_checkpoint(src)
        ckpt["optimizer"] = {"state": {}, "param_groups": [
            {"lr": 0.1, "weight_decay_filter": exclude_bias_and_norm, "params": [0, 1]}]}
        path = tmp_path / "lars.pth"
        torch.save(ckpt, path)
    finally:
        del sys.modules["optimizers"]
    assert load_official_checkpoint(build_from_official_args(ARGS), path).kind == "full"

    evil = types.ModuleType("evil")
    evil.exclude_bias_and_norm = exclude_bias_and_norm
    exclude_bias_and_norm.__module__ = "evil"
    sys.modules["evil"] = evil
    try:
        torch.save({"model": {"x": torch.zeros(1)}, "hook": exclude_bias_and_norm}, tmp_path / "e.pth")
    finally:
        del sys.modules["evil"]
    with pytest.raises(ValueError, match="weights-only"):
        load_official_checkpoint(build_from_official_args(ARGS), tmp_path / "e.pth")


def test_wrong_architecture_is_refused_with_key_names(tmp_path):
    other = build_from_official_args(dict(ARGS, arch="resnet34"))
    path = tmp_path / "r34.pth"
    torch.save(official_full_checkpoint(other), path)
    with pytest.raises(ValueError, match=r"r34.pth.*(unexpected keys|missing keys)"):
        load_official_checkpoint(build_from_official_args(ARGS), path)


def test_missing_file_and_garbage_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_official_checkpoint(build_from_official_args(ARGS), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_official_checkpoint(build_from_official_args(ARGS), tmp_path / "junk.pth")


def test_convnext_official_key_names():
    model = build_from_official_args(dict(arch="convnext_small", mlp="64-64-64",
                                          maps_mlp="32-32-32"))
    keys = set(model.backbone.state_dict())
    assert "downsample_layers.0.0.weight" in keys and "downsample_layers.3.1.bias" in keys
    assert "stages.2.26.pwconv2.weight" in keys and "norm.weight" in keys
    assert not any("gamma" in k or k.startswith("head") for k in keys)
    assert len(keys) == 306
