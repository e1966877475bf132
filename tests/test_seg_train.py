"""End to end on the CPU: a random tiny backbone exported as pretraining does, given as
--backbone (read once, converted into the work dir, loaded by mmseg, verified once), the
frozen linear protocol trained for a few iterations on the synthetic VOC aug, Cityscapes and
ADE20k layouts (read by mmseg's own dataset classes), evaluated, metrics.json written; resume
after a crash; test; fail loudly on a wrong backbone or data root."""
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
from pretrain.checkpoint import export_backbone  # noqa: E402
from transfer.weights import read_backbone  # noqa: E402
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
def backbones(tmp_path_factory):
    """A random backbone of each tiny arch, exported as pretraining exports (backbone.pth).
    Seed 7: not the weights the model is built with under the runs' seed 0."""
    folder = tmp_path_factory.mktemp("backbones")
    out = {}
    for arch in TINY:
        out[arch] = folder / f"{arch}_backbone.pth"
        state = read_backbone("random:7", arch).state_dict
        export_backbone({"arch": arch, "model": {f"backbone.{k}": v for k, v in state.items()}},
                        out[arch], source="test")
    return out


def train_args(dataset, data_root, backbone, work_dir, *extra) -> list[str]:
    config, arch, _ = CASES[dataset]
    return [str(a) for a in (
        f"configs/segmentation/{config}", "--backbone", backbone, "--data-root", data_root,
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
def test_linear_protocol_end_to_end(dataset, data_root, backbones, tmp_path):
    config, arch, dataset_class = CASES[dataset]
    work = tmp_path / "work"
    result = train(dataset, data_root, backbones[arch], work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = next(work.glob("*/*.log")).read_text()
    assert "values checked equal" in log  # VerifyPretrainedHook ran
    assert f"{dataset} at {data_root}" in result.stdout  # the layout was checked first
    converted = work / f"backbone_{arch}.pth"  # the conversion, in the work dir, in the log
    assert f"converted to {converted}:" in result.stdout
    assert "tensors renamed, 0 unmatched" in result.stdout

    record = read_metrics(work / "metrics.json")
    assert (record["task"], record["dataset"], record["protocol"]) == (
        "semantic_segmentation", dataset, "linear_frozen")
    assert record["config"] == f"configs/segmentation/{config}"
    weights = read_backbone(backbones[arch], arch)
    assert record["backbone"] == weights.info()  # the source, not the conversion
    assert record["backbone"]["source"] == str(backbones[arch])
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

    # frozen protocol: the trained backbone is still exactly the source's
    trained = mmengine_state(work / f"iter_{ITERS}.pth")
    assert all(torch.equal(trained[f"backbone.{k}"], v) for k, v in weights.state_dict.items())
    assert any(k.startswith("decode_head.conv_seg") for k in trained)


@pytest.mark.slow
def test_resume_after_a_crash_then_test(data_root, backbones, tmp_path):
    work = tmp_path / "work"
    assert train("voc12aug", data_root, backbones["convnext_mini"], work).returncode == 0
    first = read_metrics(work / "metrics.json")["metrics"]
    # crash after iteration 2: the last checkpoint is iter_2, no metrics yet
    (work / f"iter_{ITERS}.pth").unlink()
    (work / "metrics.json").unlink()
    (work / "last_checkpoint").write_text(str(work / "iter_2.pth"))
    result = train("voc12aug", data_root, backbones["convnext_mini"], work, "--resume")
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
def test_a_backbone_missing_a_tensor_fails_before_anything_is_built(data_root, backbones,
                                                                    tmp_path):
    tampered = torch.load(backbones["convnext_mini"], weights_only=True)
    del tampered["state_dict"]["downsample_layers.2.1.weight"]
    path = tmp_path / "tampered.pth"
    torch.save(tampered, path)
    with pytest.raises(SystemExit) as info:
        load_tool("seg_train").main(train_args("voc12aug", data_root, path, tmp_path / "work"))
    assert f"--backbone: {path}" in str(info.value)
    assert "missing keys: downsample_layers.2.1.weight" in str(info.value)
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_wrong_architecture_and_wrong_data_root_fail_first(data_root, backbones, tmp_path):
    seg_train = load_tool("seg_train")
    with pytest.raises(SystemExit, match="holds a resnet18 backbone, not convnext_mini "
                                         r"\(.*voc12aug_40k.py builds convnext_mini\)"):
        seg_train.main(train_args("voc12aug", data_root, backbones["resnet18"], tmp_path / "a"))
    with pytest.raises(SystemExit, match=f"missing folder {tmp_path}/nowhere/VOCdevkit/VOC2012"):
        seg_train.main(train_args("voc12aug", tmp_path / "nowhere", backbones["convnext_mini"],
                                  tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing built


def counting_loads(monkeypatch) -> dict[str, int]:
    """How many times each file is torch.load-ed in this process: the reader, mmengine's
    Pretrained init and the run's own checks all load through it."""
    loads: dict[str, int] = {}
    real = torch.load

    def load(f, *args, **kwargs):
        if isinstance(f, (str, Path)):
            key = str(Path(f).resolve())
            loads[key] = loads.get(key, 0) + 1
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    return loads


@pytest.mark.slow
def test_the_source_is_read_once_and_the_conversion_loaded_once_per_seed(data_root, backbones,
                                                                         tmp_path, monkeypatch):
    """Two seeds in one process: the --backbone file is read once, and mmseg loads the
    conversion once per seed's model (the hook compares in memory). Before, a conversion made
    by hand was loaded three times per run: the preflight, mmengine's init, the hook."""
    loads = counting_loads(monkeypatch)
    work, source = tmp_path / "work", backbones["convnext_mini"]
    assert load_tool("seg_train").main(train_args("voc12aug", data_root, source, work,
                                                  "--seeds", "0", "1")) == 0
    converted = work / "backbone_convnext_mini.pth"
    assert loads[str(source.resolve())] == 1
    assert loads[str(converted.resolve())] == 2
    for seed in (0, 1):
        log = next((work / f"seed{seed}").glob("*/*.log")).read_text()
        assert f"tensors of {converted} (from {source}), values checked equal" in log


@pytest.mark.slow
def test_weights_that_did_not_land_fail_before_the_first_iteration(data_root, backbones,
                                                                   tmp_path, monkeypatch):
    """mmengine's Pretrained init loads leniently: a conversion that lost a tensor between
    the read and mmseg's load (here: written without it) is caught by the verify hook."""
    from transfer.mmseg_side import checkpoint

    real = checkpoint.write_checkpoint

    def lossy(path, weights):
        key_map = real(path, weights)
        raw = torch.load(path, weights_only=True)
        del raw["state_dict"]["backbone.stages.2.1.pwconv1.weight"]
        torch.save(raw, path)
        return key_map

    monkeypatch.setattr(checkpoint, "write_checkpoint", lossy)  # looked up when converting
    work = tmp_path / "work"
    with pytest.raises(ValueError, match=r"values differ after loading: stages\.2\.1\.pwconv1"):
        load_tool("seg_train").main(train_args("voc12aug", data_root, backbones["convnext_mini"],
                                               work))
    assert not (work / "iter_2.pth").exists()
