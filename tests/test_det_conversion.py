"""ResNet -> detectron2 conversion, without detectron2 (the converter must not need it)."""
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pretrain.backbones import build_backbone
from transfer.detectron2_side.conversion import (AUTHOR, DROPPED, convert_resnet,
                                                 format_key_map, read_pkl, write_pkl)
from transfer.weights import BackboneWeights, read_backbone

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parent.parent


def test_conversion_and_synthetic_data_do_not_import_detectron2():
    code = ("import sys, transfer.detectron2_side, transfer.detectron2_side.conversion, "
            "transfer.synthetic.detection; assert 'detectron2' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_every_key_is_accounted_for(arch):
    weights = read_backbone("random:3", arch)
    model_dict, key_map = convert_resnet(weights)
    assert [src for src, _ in key_map] == list(weights.state_dict)  # every key, in order
    converted = {src: dst for src, dst in key_map if dst != DROPPED}
    dropped = [src for src, dst in key_map if dst == DROPPED]
    assert all(src.endswith("num_batches_tracked") for src in dropped)
    assert len(dropped) == sum(k.endswith("num_batches_tracked") for k in weights.state_dict)
    assert sorted(converted.values()) == sorted(model_dict)  # one target per source
    for src, dst in converted.items():
        np.testing.assert_array_equal(model_dict[dst], weights.state_dict[src].numpy())
        assert model_dict[dst].dtype == np.float32


def test_names_follow_the_detectron2_convention():
    _, key_map = convert_resnet(read_backbone("random", "resnet50"))
    names = dict(key_map)
    assert names["conv1.weight"] == "stem.conv1.weight"
    assert names["bn1.running_var"] == "stem.conv1.norm.running_var"
    assert names["layer1.0.conv3.weight"] == "res2.0.conv3.weight"
    assert names["layer2.3.bn2.bias"] == "res3.3.conv2.norm.bias"
    assert names["layer3.0.downsample.0.weight"] == "res4.0.shortcut.weight"
    assert names["layer4.0.downsample.1.running_mean"] == "res5.0.shortcut.norm.running_mean"
    assert names["layer4.2.bn3.num_batches_tracked"] == DROPPED


def test_unmatched_key_fails_naming_it():
    weights = read_backbone("random", "resnet18")
    state = dict(weights.state_dict, **{"layer5.0.conv1.weight": torch.zeros(1)})
    bad = BackboneWeights("resnet18", state, "bad.pth", "ours-export")
    with pytest.raises(ValueError, match=r"bad\.pth.*layer5\.0\.conv1\.weight"):
        convert_resnet(bad)


def test_convnext_is_refused():
    with pytest.raises(ValueError, match="ConvNeXt is a registered backbone"):
        convert_resnet(read_backbone("random", "convnext_mini"))


def test_torchvision_file_through_the_reader(tmp_path):
    path = tmp_path / "tv_resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    weights = read_backbone(path, "resnet18")
    assert weights.kind == "torchvision" and weights.dropped == ["fc.weight", "fc.bias"]
    model_dict, key_map = convert_resnet(weights)
    assert len(model_dict) == 100 and len(key_map) == 120
    assert "100 tensors converted, 20 counters dropped, 0 unmatched" in format_key_map(key_map)


def test_pkl_round_trip(tmp_path):
    weights = read_backbone("random:1", "resnet18")
    model_dict, _ = convert_resnet(weights)
    path = write_pkl(tmp_path / "r18.pkl", model_dict, weights.info())
    with open(path, "rb") as f:  # the layout detectron2's checkpointer reads
        raw = pickle.load(f)
    assert raw["__author__"] == AUTHOR and raw["matching_heuristics"] is True
    assert raw["__vicregl__"]["sha256"] == weights.sha256
    data = read_pkl(path)
    assert sorted(data["model"]) == sorted(model_dict)
    np.testing.assert_array_equal(data["model"]["stem.conv1.weight"],
                                  model_dict["stem.conv1.weight"])
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary file


def test_pkl_reader_refuses_code_and_bad_layout(tmp_path):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": {}, "x": print}))
    with pytest.raises(ValueError, match="refusing to unpickle builtins.print"):
        read_pkl(evil)
    flat = tmp_path / "flat.pkl"
    flat.write_bytes(pickle.dumps({"stem.conv1.weight": np.zeros(3)}))
    with pytest.raises(ValueError, match="flat.pkl: expected a dict with a 'model' dict"):
        read_pkl(flat)
    with pytest.raises(TypeError, match="numpy arrays"):
        write_pkl(tmp_path / "t.pkl", {"a": torch.zeros(1)})


def test_converted_weights_compute_our_features_without_detectron2():
    """Sanity check of the renaming alone: mapping back gives the same backbone."""
    weights = read_backbone("random:2", "resnet18")
    model_dict, key_map = convert_resnet(weights)
    back = {src: torch.from_numpy(model_dict[dst]) for src, dst in key_map if dst != DROPPED}
    model = build_backbone("resnet18")
    missing, unexpected = model.load_state_dict(back, strict=False)
    assert all(k.endswith("num_batches_tracked") for k in missing) and not unexpected
