"""Backbone -> detectron2 conversion, without detectron2 (the converter must not need it)."""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pretrain.backbones import build_backbone
from transfer.detectron2_side.conversion import (AUTHOR, DROPPED, convert_backbone,
                                                 convert_convnext, convert_nano, convert_resnet,
                                                 format_key_map, read_pkl, write_pkl)
from transfer.weights import BackboneWeights, read_backbone
from conftest import THREADS  # noqa: E402

torch.set_num_threads(THREADS)
ROOT = Path(__file__).resolve().parent.parent


def test_synthetic_data_does_not_import_detectron2():
    code = "import sys, transfer.synthetic.detection; assert 'detectron2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# Run with detectron2 hidden (so also where it is installed): the package imports, conversion
# works, and the names that need detectron2 say so, with the missing-extra reason.
WITHOUT_DETECTRON2 = """if True:
    import sys
    from transfer.extras import install_import_blocker
    install_import_blocker()
    import transfer.detectron2_side
    from transfer.detectron2_side.annotations import check_coco_annotations
    from transfer.detectron2_side.conversion import convert_backbone, read_pkl, write_pkl
    from transfer.weights import read_backbone
    for arch in ("resnet18", "convnext_mini"):
        weights = read_backbone("random:0", arch)
        path = write_pkl(f"{sys.argv[1]}/{arch}.pkl", convert_backbone(weights)[0],
                         weights.info())
        assert read_pkl(path)["__vicregl__"]["arch"] == arch
    try:
        from transfer.detectron2_side import add_vicregl_config
    except ModuleNotFoundError as exc:
        print(exc)
    assert transfer.detectron2_side.DETECTRON2_COMMIT
    assert "detectron2" not in sys.modules, "imported"
"""


def test_without_detectron2_conversion_works_and_the_rest_names_the_extra(tmp_path):
    env = dict(os.environ, VICREGL_HIDE_EXTRAS="detectron2")
    run = subprocess.run([sys.executable, "-c", WITHOUT_DETECTRON2, str(tmp_path)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        "transfer.detectron2_side.add_vicregl_config needs detectron2: detectron2 is hidden by "
        "VICREGL_HIDE_EXTRAS=detectron2 (optional extra: bash tools/install_detectron2.sh "
        "(docs/detection.md))")


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


def test_each_converter_refuses_the_other_architecture():
    with pytest.raises(ValueError, match="convert_resnet needs a ResNet, got convnext_mini"):
        convert_resnet(read_backbone("random", "convnext_mini"))
    with pytest.raises(ValueError, match="convert_convnext needs a ConvNeXt, got resnet18"):
        convert_convnext(read_backbone("random", "resnet18"))


def test_convnext_keys_are_prefixed_and_the_final_norm_dropped():
    weights = read_backbone("random:3", "convnext_mini")
    model_dict, key_map = convert_backbone(weights)
    assert [src for src, _ in key_map] == list(weights.state_dict)  # every key, in order
    names = dict(key_map)
    assert names["stages.1.0.dwconv.weight"] == "convnext.stages.1.0.dwconv.weight"
    assert names["downsample_layers.0.1.bias"] == "convnext.downsample_layers.0.1.bias"
    assert names["norm.weight"] == names["norm.bias"] == DROPPED
    assert sorted(model_dict) == sorted(f"convnext.{k}" for k in weights.state_dict
                                        if not k.startswith("norm."))
    for src, dst in key_map:
        if dst != DROPPED:
            np.testing.assert_array_equal(model_dict[dst], weights.state_dict[src].numpy())
    text = format_key_map(key_map)
    assert "norm.weight" in text and "(dropped: pretraining's final norm" in text
    assert text.endswith("56 tensors converted, 2 final-norm tensors dropped, 0 unmatched "
                         "(of 58 keys)")
    state = dict(weights.state_dict, **{"head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"bad\.pth.*head\.weight"):
        convert_backbone(BackboneWeights("convnext_mini", state, "bad.pth", "ours-export"))


def test_resnet_nano_keys_are_prefixed_not_renamed():
    """resnet_nano takes the ConvNeXt-like path (pretraining keys under a prefix), never the
    detectron2-ResNet renaming: its layout (3x3 stem, stride 8) is not detectron2's ResNet."""
    weights = read_backbone("random:3", "resnet_nano")
    model_dict, key_map = convert_backbone(weights)
    assert [src for src, _ in key_map] == list(weights.state_dict)
    names = dict(key_map)
    assert names["conv1.weight"] == "resnet_nano.conv1.weight"
    assert names["layer3.0.downsample.1.running_var"] == \
        "resnet_nano.layer3.0.downsample.1.running_var"
    assert names["bn1.num_batches_tracked"] == DROPPED
    assert sorted(model_dict) == sorted(f"resnet_nano.{k}" for k in weights.state_dict
                                        if not k.endswith("num_batches_tracked"))
    assert format_key_map(key_map).endswith(
        "60 tensors converted, 12 counters dropped, 0 unmatched (of 72 keys)")
    with pytest.raises(ValueError, match="convert_resnet needs a ResNet, got resnet_nano"):
        convert_resnet(weights)
    with pytest.raises(ValueError, match="convert_nano needs resnet_nano, got resnet18"):
        convert_nano(read_backbone("random", "resnet18"))


@pytest.mark.slow
def test_convert_tool_writes_a_convnext_pkl(tmp_path):
    out = tmp_path / "cnx.pkl"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "convert.py"), "--framework",
                          "detectron2", "--arch", "convnext_mini", "--source", "random:0",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "stages.0.0.pwconv1.weight" in run.stdout and "-> convnext.stages.0.0" in run.stdout
    assert "56 tensors converted, 2 final-norm tensors dropped, 0 unmatched" in run.stdout
    data = read_pkl(out)
    assert "convnext.stages.0.0.pwconv1.weight" in data["model"]
    assert data["__vicregl__"]["sha256"] == read_backbone("random:0", "convnext_mini").sha256


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
