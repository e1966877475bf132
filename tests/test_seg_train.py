"""End to end on the CPU: convert a random tiny backbone, train the frozen linear protocol
for a few iterations on the synthetic VOC aug, Cityscapes and ADE20k layouts (read by mmseg's
own dataset classes), evaluate, write metrics.json; resume after a crash; test; fail loudly
on a wrong checkpoint or data root."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")

from mmseg.datasets import ADE20KDataset, CityscapesDataset, PascalVOCDataset  # noqa: E402

from transfer.fingerprint import deviations  # noqa: E402
from transfer.metrics import read_metrics  # noqa: E402
from transfer.mmseg_side.checkpoint import read_checkpoint  # noqa: E402
from transfer.mmseg_side.runner import MMENGINE_CHECKPOINT_GLOBALS, run_dir_of  # noqa: E402
from transfer.synthetic.segmentation import WRITERS  # noqa: E402
from conftest import THREADS, load_tool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
TINY = {"convnext_mini": ["model.backbone.arch=convnext_mini",
                          "model.decode_head.in_channels=[16,32,64,128]"],
        "resnet18": ["model.backbone.depth=18", "model.decode_head.in_channels=512"]}
CASES = {
    "voc12aug": ("linear_convnext_small_voc12aug_40k.py", "convnext_mini", PascalVOCDataset),
    "cityscapes": ("linear_resnet50_cityscapes_40k.py", "resnet18", CityscapesDataset),
    "ade20k": ("linear_convnext_small_ade20k_160k.py", "convnext_mini", ADE20KDataset),
}
ITERS = 4


def run(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)



@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for writer in WRITERS.values():
        writer(root, num_train=8, num_val=4, size=64, seed=0)
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    out = {}
    convert = load_tool("convert")
    for arch in TINY:
        out[arch] = folder / f"{arch}_random_mmseg.pth"
        assert convert.main(["--framework", "mmseg", "--arch", arch, "--source", "random:0",
                             "--out", str(out[arch]), "--quiet"]) == 0
    return out


def train_args(dataset, data_root, checkpoint, work_dir, *extra) -> list[str]:
    config, arch, _ = CASES[dataset]
    return [str(a) for a in (
        f"configs/segmentation/{config}", "--checkpoint", checkpoint, "--data-root", data_root,
        "--work-dir", work_dir, "--max-iters", ITERS, "--crop-size", 64, "--total-batch", 2,
        "--num-workers", 0, *extra, "--cfg-options", *TINY[arch],
        "default_hooks.checkpoint.interval=2", f"train_cfg.val_interval={ITERS}")]


def train(*args, **kwargs):
    return run("tools/seg_train.py", *train_args(*args, **kwargs))


def mmengine_state(path: Path) -> dict:
    with torch.serialization.safe_globals(MMENGINE_CHECKPOINT_GLOBALS):
        return torch.load(path, map_location="cpu")["state_dict"]


@pytest.mark.parametrize("dataset", CASES)
@pytest.mark.slow
def test_linear_protocol_end_to_end(dataset, data_root, checkpoints, tmp_path):
    config, arch, dataset_class = CASES[dataset]
    work = tmp_path / "work"
    result = train(dataset, data_root, checkpoints[arch], work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = next(work.glob("*/*.log")).read_text()
    assert "values checked equal" in log  # VerifyPretrainedHook ran
    assert f"{dataset} at {data_root}" in result.stdout  # the layout was checked first

    record = read_metrics(work / "metrics.json")
    assert (record["task"], record["dataset"], record["protocol"]) == (
        "semantic_segmentation", dataset, "linear_frozen")
    assert record["config"] == f"configs/segmentation/{config}"
    meta = read_checkpoint(checkpoints[arch])["meta"]
    assert record["backbone"] == meta["backbone"] and record["backbone"]["arch"] == arch
    metrics = record["metrics"]
    for key in ("mIoU", "mAcc", "aAcc"):
        assert 0.0 <= metrics[key] <= 100.0
    classes = dataset_class.METAINFO["classes"]
    assert list(metrics["per_class"]) == list(classes)
    assert list(record["per_class_acc"]) == list(classes)
    absent = [c for c, acc in record["per_class_acc"].items() if acc is None]
    assert absent and len(absent) < len(classes)  # 8 synthetic classes of 21 / 19 / 150
    assert record["iterations"] == ITERS and record["total_batch"] == 2
    assert record["cost"]["gpus"] == 0 and record["cost"]["wall_s"] > 0
    # the protocol fingerprint: this run's settings, the config's reference, their differences
    settings, reference = record["settings"], record["reference_settings"]
    assert set(settings) == {"total_batch", "processes", "gpus", "norm", "crop", "test_mode",
                             "iterations", "precision", "lr", "seed", "deterministic",
                             "config_sha256", "frameworks"}
    assert (settings["total_batch"], settings["processes"], settings["gpus"],
            settings["iterations"], settings["seed"], min(settings["crop"])) == (2, 1, 0, ITERS,
                                                                                 0, 64)
    assert settings["norm"] == "SyncBN" and settings["precision"] == "fp32"
    assert settings["frameworks"]["mmseg"] == "1.2.2" and len(settings["config_sha256"]) == 64
    assert reference["total_batch"] == 16 and reference["iterations"] in (40000, 160000)
    assert set(reference) <= set(settings)
    found = deviations(settings, reference)
    assert found[0] == "total batch 2, protocol 16"
    assert any(d.startswith(f"iterations {ITERS}, protocol ") for d in found), found

    # frozen protocol: the trained backbone is still exactly the converted one
    trained = mmengine_state(work / f"iter_{ITERS}.pth")
    converted = read_checkpoint(checkpoints[arch])["state_dict"]
    assert all(torch.equal(trained[k], v) for k, v in converted.items())
    assert any(k.startswith("decode_head.conv_seg") for k in trained)


@pytest.mark.slow
def test_resume_after_a_crash_then_test(data_root, checkpoints, tmp_path):
    work = tmp_path / "work"
    assert train("voc12aug", data_root, checkpoints["convnext_mini"], work).returncode == 0
    first = read_metrics(work / "metrics.json")["metrics"]
    # crash after iteration 2: the last checkpoint is iter_2, no metrics yet
    (work / f"iter_{ITERS}.pth").unlink()
    (work / "metrics.json").unlink()
    (work / "last_checkpoint").write_text(str(work / "iter_2.pth"))
    result = train("voc12aug", data_root, checkpoints["convnext_mini"], work, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    log = sorted(work.glob("*/*.log"))[-1].read_text()
    assert "resumed epoch: 0, iter: 2" in log
    assert read_metrics(work / "metrics.json")["metrics"] == first  # same run, same numbers

    result = run("tools/seg_test.py", "configs/segmentation/linear_convnext_small_voc12aug_40k.py",
                 work / f"iter_{ITERS}.pth", "--data-root", data_root, "--crop-size", 64,
                 "--num-workers", 0, "--cfg-options", *TINY["convnext_mini"])
    assert result.returncode == 0, result.stderr[-3000:]
    tested = read_metrics(work / f"test_iter_{ITERS}" / "metrics.json")
    assert tested["metrics"] == first
    assert tested["backbone"]["arch"] == "convnext_mini"

    # seg_test trusts mmengine's pickles beside the run marker only
    stray = tmp_path / "stray.pth"
    shutil.copy(work / f"iter_{ITERS}.pth", stray)
    assert run_dir_of(work / f"iter_{ITERS}.pth") == work and run_dir_of(stray) is None


@pytest.mark.slow
def test_a_checkpoint_missing_a_tensor_fails_before_training(data_root, checkpoints, tmp_path):
    tampered = torch.load(checkpoints["convnext_mini"], weights_only=True)
    del tampered["state_dict"]["backbone.downsample_layers.2.1.weight"]
    path = tmp_path / "tampered.pth"
    torch.save(tampered, path)
    result = train("voc12aug", data_root, path, tmp_path / "work")
    assert result.returncode != 0
    assert "left at random init): downsample_layers.2.1.weight" in result.stderr
    assert not (tmp_path / "work" / "iter_2.pth").exists()


@pytest.mark.slow
def test_wrong_architecture_and_wrong_data_root_fail_first(data_root, checkpoints, tmp_path):
    seg_train = load_tool("seg_train")
    with pytest.raises(SystemExit, match="holds a resnet18 backbone but .* builds convnext_mini"):
        seg_train.main(train_args("voc12aug", data_root, checkpoints["resnet18"], tmp_path / "a"))
    with pytest.raises(SystemExit, match=f"missing folder {tmp_path}/nowhere/VOCdevkit/VOC2012"):
        seg_train.main(train_args("voc12aug", tmp_path / "nowhere", checkpoints["convnext_mini"],
                                  tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing built
