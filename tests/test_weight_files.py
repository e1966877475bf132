"""One detector of weights-file kinds (pretrain.weight_files), used by both readers: the
official loader (pretrain.official) and the transfer reader (transfer.weights)."""
import pytest
import torch
from torchvision.models import resnet18

from pretrain.checkpoint import atomic_save, export_backbone
from pretrain.official import build_from_official_args, load_official_checkpoint
from pretrain.weight_files import (MMSEG_FORMAT, TRAIN_FORMAT, file_kind, identify,
                                   read_weights_file)
from transfer.weights import read_backbone

ARGS = dict(arch="resnet18", mlp="64-64-64", maps_mlp="32-32-32", num_classes=10)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """One file of every kind, all holding the backbone of the same resnet18 VICRegL."""
    folder = tmp_path_factory.mktemp("kinds")
    torch.manual_seed(0)
    model = build_from_official_args(ARGS)
    full = model.state_dict()
    backbone = model.backbone.state_dict()
    paths = {name: folder / f"{name}.pth" for name in (
        "ours-train", "ours-export", "mmseg-conversion", "official-full", "official-bare",
        "official-backbone", "torchvision", "model-backbone-only")}
    train = {"format": TRAIN_FORMAT, "arch": "resnet18", "model": full, "step": 3}
    atomic_save(train, paths["ours-train"])
    export_backbone(train, paths["ours-export"], "train.pth")
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.items()},
                "meta": {"format": MMSEG_FORMAT, "arch": "resnet18"}}, paths["mmseg-conversion"])
    torch.save({"epoch": 1, "model": {f"module.{k}": v for k, v in full.items()},
                "optimizer": {}}, paths["official-full"])
    torch.save(full, paths["official-bare"])
    torch.save(backbone, paths["official-backbone"])
    tv = resnet18().state_dict()
    tv.update(backbone)
    torch.save(tv, paths["torchvision"])
    torch.save({"model": backbone}, paths["model-backbone-only"])
    return {"paths": paths, "backbone": backbone, "full": full}


KINDS = {"ours-train": ("ours-train", "resnet18", True),
         "ours-export": ("ours-export", "resnet18", False),
         "mmseg-conversion": ("mmseg-conversion", "resnet18", False),
         "official-full": ("official-full", None, True),
         "official-bare": ("official-full", None, True),
         "official-backbone": ("official-backbone", None, False),
         "torchvision": ("torchvision", None, False),
         "model-backbone-only": ("official-backbone", None, False)}


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_is_told_apart_and_its_backbone_found(files, name):
    found = read_weights_file(files["paths"][name])
    kind, arch, whole = KINDS[name]
    assert (found.kind, found.arch, found.whole_model) == (kind, arch, whole)
    state, dropped = found.backbone()
    assert set(state) == set(files["backbone"])
    assert all(torch.equal(state[k], v) for k, v in files["backbone"].items())
    if whole:
        assert dropped and not any(k.startswith("backbone.") for k in dropped)
    if name == "torchvision":
        assert dropped == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("name", KINDS)
def test_both_readers_accept_every_kind(files, name):
    weights = read_backbone(files["paths"][name], "resnet18")
    assert weights.kind == KINDS[name][0]
    assert all(torch.equal(weights.state_dict[k], v) for k, v in files["backbone"].items())
    model = build_from_official_args(ARGS)
    report = load_official_checkpoint(model, files["paths"][name])
    assert report.kind == ("full" if KINDS[name][2] else "backbone")
    assert all(torch.equal(model.backbone.state_dict()[k], v)
               for k, v in files["backbone"].items())


def test_detector_refusals_name_the_file():
    assert file_kind([1, 2]) is None
    with pytest.raises(ValueError, match="f.pth: expected a state dict or checkpoint, got list"):
        identify([1, 2], "f.pth")
    with pytest.raises(ValueError, match=r"f.pth: no tensors found \(read as ours-export\)"):
        identify({"format": "vicregl-suite/backbone/v1", "state_dict": {}}, "f.pth")
    with pytest.raises(ValueError, match=r"no backbone tensors found \(read as ours-train\)"):
        identify({"format": TRAIN_FORMAT, "model": {"projector.w": torch.ones(1)}},
                 "f.pth").backbone()


def test_our_files_name_their_architecture_and_are_checked_against_it(files):
    with pytest.raises(ValueError, match="is a resnet18 training checkpoint, not resnet34"):
        read_backbone(files["paths"]["ours-train"], "resnet34")
    with pytest.raises(ValueError, match="holds a resnet18 backbone, not resnet34"):
        read_backbone(files["paths"]["mmseg-conversion"], "resnet34")
