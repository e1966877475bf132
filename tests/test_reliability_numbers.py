"""Silently wrong numbers (docs/reliability.md, "Silently wrong numbers").

A backbone with NaN or inf weights converted and evaluated without a word, and tools/cls_eval.py
then reported a k-NN top-1 above the sane backbone's; finite weights whose features overflow
did the same, and so did ``--temperature 0`` and ``--k 0``. Each is now refused, naming the
file (and tensor) or the option.
"""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_tool
from transfer.weights import read_backbone

KNN = ["--batch-size", "6", "--image-size", "32", "--resize", "32", "--workers", "0"]
NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def poisoned(arch: str, value: float, path: Path, key: str | None = None) -> Path:
    """A plain state dict of ``arch`` (random:0) with one weight set to ``value``."""
    state = {k: v.clone() for k, v in read_backbone("random:0", arch).state_dict.items()}
    key = key or next(k for k, v in state.items() if v.ndim == 4)
    state[key].view(-1)[3] = value
    torch.save(state, path)
    return path


def overflowing(path: Path) -> Path:
    """Finite resnet18 weights whose features overflow to inf (conv1 scaled by 1e38)."""
    state = {k: v.clone() for k, v in read_backbone("random:0", "resnet18").state_dict.items()}
    state["conv1.weight"] *= 1e38
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    from test_cls_eval import write_folder

    root = tmp_path_factory.mktemp("cls")
    write_folder(root, {"train": 6, "val": 4})
    return root


@pytest.mark.parametrize("kind", NON_FINITE)
def test_the_reader_refuses_non_finite_weights(kind, tmp_path):
    path = poisoned("convnext_mini", NON_FINITE[kind], tmp_path / "b.pth",
                    key="stages.1.0.dwconv.weight")
    with pytest.raises(ValueError) as info:
        read_backbone(path, "convnext_mini")
    assert f"{path}: tensor stages.1.0.dwconv.weight holds 1 NaN or inf value(s)" in str(
        info.value)


def test_check_finite_reads_tensors_and_arrays():
    from pretrain.weight_files import check_finite

    check_finite({"a": torch.ones(2), "steps": torch.tensor([3]), "b": np.zeros(2)}, "f")
    with pytest.raises(ValueError, match="f: tensor b holds 2 NaN or inf value"):
        check_finite({"a": torch.ones(2), "b": np.array([np.nan, np.inf])}, "f")


@pytest.mark.parametrize("framework", ["mmseg", "detectron2"])
def test_convert_refuses_a_backbone_with_nan_weights(framework, tmp_path):
    source = poisoned("resnet18", float("nan"), tmp_path / "nan.pth", key="conv1.weight")
    out = tmp_path / ("out.pth" if framework == "mmseg" else "out.pkl")
    with pytest.raises(SystemExit) as info:
        load_tool("convert").main(["--framework", framework, "--arch", "resnet18", "--source",
                                   str(source), "--out", str(out), "--quiet"])
    assert f"{source}: tensor conv1.weight holds 1 NaN or inf" in str(info.value)
    assert not out.exists()


def test_an_mmseg_conversion_with_nan_weights_is_refused(tmp_path):
    """A conversion (what seg_train writes into its work dir) edited afterwards, or written by
    hand, given as --backbone: the reader checks it as any source."""
    from transfer.conversion import convert_into

    path = convert_into("random:0", "resnet18", tmp_path, "mmseg").path
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["backbone.layer1.0.bn1.running_var"][0] = float("inf")
    torch.save(raw, path)
    with pytest.raises(ValueError, match=f"{path}: tensor layer1.0.bn1.running_var "
                                         "holds 1 NaN or inf"):
        read_backbone(path, "resnet18")


def test_detectron2_weights_with_nan_are_refused(tmp_path):
    """MODEL.WEIGHTS, checked before detectron2 loads it (no detectron2 needed)."""
    from transfer.detectron2_side.conversion import check_weights_file

    pkl = tmp_path / "w.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {"stem.conv1.weight": np.array([1.0, np.nan], np.float32)}}, f)
    with pytest.raises(ValueError, match=f"{pkl}: tensor stem.conv1.weight holds 1 NaN"):
        check_weights_file(str(pkl))
    pth = tmp_path / "w.pth"
    torch.save({"model": {"backbone.x": torch.tensor([float("inf")])}, "iteration": 3}, pth)
    with pytest.raises(ValueError, match=f"{pth}: tensor backbone.x holds 1 NaN"):
        check_weights_file(str(pth))


@pytest.mark.parametrize("backbone, arch, expected", [
    ("nan", "convnext_mini", "{file}: tensor downsample_layers.0.0.weight holds 1 NaN"),
    pytest.param("overflow", "resnet18", "backbone {file}: pooled features of the train images: ",
                 marks=pytest.mark.slow),
])
def test_cls_eval_knn_refuses_non_finite_weights_and_features(backbone, arch, expected,
                                                               image_root, tmp_path):
    """Before the fix both printed 'knn seed 0: top1 33.33' where random:0 gives 25.00."""
    file = (poisoned(arch, float("nan"), tmp_path / "nan.pth") if backbone == "nan"
            else overflowing(tmp_path / "overflow.pth"))
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as info:
        load_tool("cls_eval").main(["--arch", arch, "--backbone", str(file), "--data-root",
                                    str(image_root), "--work-dir", str(work), *KNN])
    assert expected.format(file=file) in str(info.value)
    assert not (work / "metrics.json").exists()


def test_cls_eval_linear_refuses_a_non_finite_loss(image_root, tmp_path):
    file = overflowing(tmp_path / "overflow.pth")
    with pytest.raises(SystemExit) as info:
        load_tool("cls_eval").main(["--arch", "resnet18", "--backbone", str(file),
                                    "--data-root", str(image_root), "--work-dir",
                                    str(tmp_path / "work"), "--protocol", "linear",
                                    "--epochs", "1", *KNN])
    assert (f"backbone {file}: the linear probe's training loss is nan at step 1"
            in str(info.value))
    assert not (tmp_path / "work" / "metrics.json").exists()


@pytest.mark.parametrize("option, value, expected", [
    ("--k", "0", "argument --k: 0: expected an integer >= 1"),
    ("--temperature", "0", "argument --temperature: 0: expected a finite number > 0"),
    ("--temperature", "-0.07", "argument --temperature: -0.07: expected a finite number > 0"),
    ("--temperature", "nan", "argument --temperature: nan: expected a finite number > 0"),
    ("--temperature", "inf", "argument --temperature: inf: expected a finite number > 0"),
    ("--memory-fraction", "0", "argument --memory-fraction: 0: expected a number in (0, 1]"),
    ("--memory-fraction", "nan", "argument --memory-fraction: nan: expected a number in (0, 1]"),
    ("--lr", "nan", "argument --lr: nan: expected a finite number > 0"),
    ("--momentum", "1", "argument --momentum: 1: expected a number in [0, 1)"),
    ("--batch-size", "0", "argument --batch-size: 0: expected an integer >= 1"),
])
def test_cls_eval_refuses_meaningless_options(option, value, expected, capsys, tmp_path):
    """'--temperature 0' and '--k 0' printed 'top1 33.33' (above random:0's 25.00)."""
    with pytest.raises(SystemExit) as info:
        load_tool("cls_eval").main(["--arch", "convnext_mini", "--backbone", "random:0",
                                    "--data-root", str(tmp_path), "--work-dir",
                                    str(tmp_path / "w"), option, value])
    assert info.value.code == 2
    assert expected in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "w").exists()


def test_the_evaluation_api_refuses_them_too(tmp_path):
    from transfer.evaluation.cls_eval import evaluate

    for kwargs, expected in (({"k": 0}, "--k 0: expected an integer >= 1"),
                             ({"temperature": 0.0}, "--temperature 0.0: expected a finite")):
        with pytest.raises(ValueError, match=expected):
            evaluate(arch="convnext_mini", backbone="random:0", data_root=tmp_path,
                     work_dir=tmp_path / "w", **kwargs)
    assert not (tmp_path / "w").exists()


@pytest.mark.mmseg
@pytest.mark.parametrize("option, value, expected", [
    ("--k", "0", "argument --k: 0: expected an integer >= 1"),
    ("--temperature", "0", "argument --temperature: 0: expected a finite number > 0"),
    ("--memory-fraction", "1.5", "argument --memory-fraction: 1.5: expected a number in (0, 1]"),
    ("--memory-epochs", "0", "argument --memory-epochs: 0: expected an integer >= 1"),
    ("--memory-size", "0", "argument --memory-size: 0: expected an integer >= 1"),
])
def test_dense_nn_eval_refuses_meaningless_options(option, value, expected, capsys, tmp_path):
    pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")
    from transfer.mmseg_side.dense_nn import DenseNNSettings

    with pytest.raises(SystemExit) as info:
        load_tool("dense_nn_eval").main([
            "configs/segmentation/linear_convnext_small_voc12aug_40k.py", "--arch",
            "convnext_mini", "--backbone", "random:0", "--data-root", str(tmp_path),
            "--work-dir", str(tmp_path / "w"), option, value])
    assert info.value.code == 2
    assert expected in capsys.readouterr().err.splitlines()[-1]
    with pytest.raises(ValueError, match="--k 0: expected an integer >= 1"):
        DenseNNSettings(k=0).check()


@pytest.mark.mmseg
@pytest.mark.slow
def test_dense_nn_eval_refuses_features_that_overflow(tmp_path):
    pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")
    from transfer.synthetic.segmentation import write_voc12aug

    write_voc12aug(tmp_path / "data", num_train=2, num_val=1, size=64, seed=0)
    file = overflowing(tmp_path / "overflow.pth")
    with pytest.raises(SystemExit) as info:
        load_tool("dense_nn_eval").main([
            "configs/segmentation/linear_resnet50_voc12aug_40k.py", "--arch", "resnet18",
            "--backbone", str(file), "--data-root", str(tmp_path / "data"), "--work-dir",
            str(tmp_path / "w"), "--crop-size", "64", "--workers", "0", "--batch-size", "2",
            "--cfg-options", "model.backbone.depth=18", "model.decode_head.in_channels=512"])
    assert f"backbone {file}: local features (last): " in str(info.value)
    assert "NaN or inf" in str(info.value)
    assert not (tmp_path / "w" / "metrics.json").exists()
