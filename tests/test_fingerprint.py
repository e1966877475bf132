"""Protocol fingerprints (transfer/fingerprint.py): deviations in words, the config hash over
local bases, framework versions, and every protocol config declaring its reference settings
with the values the config itself runs."""
import ast
import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml

from transfer.fingerprint import config_sha256, deviations, framework_versions

ROOT = Path(__file__).resolve().parent.parent


def test_deviations_in_words():
    reference = {"total_batch": 16, "norm": "SyncBN", "crop": [512, 512], "lr": 0.0001,
                 "iterations": 40000, "frameworks": {"mmseg": "1.2.2"}}
    same = {"total_batch": 16.0, "norm": "SyncBN", "crop": (512, 512), "lr": 1e-4,
            "iterations": 40000, "frameworks": {"mmseg": "1.2.2", "torch": "2.9.1"},
            "seed": 3}
    assert deviations(same, reference) == []  # 16 == 16.0, a tuple == a list, extra keys ignored
    actual = dict(same, total_batch=8, crop=[64, 64], lr=0.003, frameworks={"mmseg": "1.1.0"})
    del actual["iterations"]
    assert deviations(actual, reference) == [
        "total batch 8, protocol 16", "crop 64x64, protocol 512x512",
        "lr 0.003, protocol 0.0001", "iterations not recorded, protocol 40000",
        "frameworks.mmseg 1.1.0, protocol 1.2.2"]
    assert deviations(None, reference)[0] == "total batch not recorded, protocol 16"
    assert deviations({"total_batch": 8}, None) == []  # no reference: nothing to compare


def test_config_hash_covers_local_bases(tmp_path):
    (tmp_path / "_base_").mkdir()
    base = tmp_path / "_base_" / "schedule.py"
    base.write_text("max_iters = 40000\n")
    config = tmp_path / "exp.py"
    config.write_text("_base_ = ['./_base_/schedule.py', 'mmseg::_base_/default_runtime.py']\n"
                      "crop_size = (512, 512)\n")
    before = config_sha256(config)
    assert re.fullmatch(r"[0-9a-f]{64}", before) and config_sha256(config) == before
    base.write_text("max_iters = 20000\n")  # a change in a base changes the hash
    assert config_sha256(config) != before
    child = tmp_path / "det.yaml"
    (tmp_path / "base.yaml").write_text("SOLVER:\n  MAX_ITER: 10\n")
    child.write_text('_BASE_: "base.yaml"\nMODEL:\n  MASK_ON: False\n')
    first = config_sha256(child)
    (tmp_path / "base.yaml").write_text("SOLVER:\n  MAX_ITER: 20\n")
    assert config_sha256(child) != first
    (tmp_path / "base.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="base.yaml"):
        config_sha256(child)


def test_framework_versions(monkeypatch):
    monkeypatch.delenv("VICREGL_HIDE_EXTRAS", raising=False)
    versions = framework_versions()
    assert versions["torch"] == importlib.metadata.version("torch")
    try:
        d2 = importlib.metadata.version("detectron2")
    except importlib.metadata.PackageNotFoundError:
        assert "detectron2" not in versions
    else:  # <version>+<commit>: the commit pip recorded, else the pinned one
        assert versions["detectron2"].startswith(f"{d2}+")
        assert re.fullmatch(r"[0-9a-f]{40}", versions["detectron2"].split("+", 1)[1])
    monkeypatch.setenv("VICREGL_HIDE_EXTRAS", "detectron2,torch")
    assert "detectron2" not in framework_versions() and "torch" not in framework_versions()


def _py_reference(path: Path) -> dict:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == \
                "reference_settings":
            return {k.arg: ast.literal_eval(k.value) for k in node.value.keywords}
    raise AssertionError(f"{path} declares no reference_settings")


SEG_CONFIGS = sorted((ROOT / "configs/segmentation").glob("*.py"))


@pytest.mark.mmseg
@pytest.mark.parametrize("path", SEG_CONFIGS, ids=[p.stem for p in SEG_CONFIGS])
def test_every_segmentation_config_declares_its_reference(path):
    """The declared reference is what the config itself runs (before any override)."""
    config = pytest.importorskip("mmengine.config")
    cfg = config.Config.fromfile(str(path), import_custom_modules=False)
    reference = _py_reference(path)
    assert set(reference) == {"total_batch", "norm", "crop", "test_mode", "iterations",
                              "precision", "lr"}
    amp = cfg.optim_wrapper.type == "AmpOptimWrapper"
    assert reference == {
        "total_batch": cfg.total_batch_size, "norm": cfg.model.decode_head.norm_cfg.type,
        "crop": tuple(cfg.crop_size), "test_mode": cfg.model.test_cfg.mode,
        "iterations": cfg.train_cfg.max_iters, "precision": "fp16" if amp else "fp32",
        "lr": cfg.optim_wrapper.optimizer.lr}


def _yaml_merged(path: Path) -> dict:
    """A detectron2 yaml with its _BASE_ chain merged (child wins), as detectron2 does."""
    raw = yaml.safe_load(path.read_text())
    base = raw.pop("_BASE_", None)
    merged = _yaml_merged((path.parent / base).resolve()) if base else {}

    def merge(into, new):
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
    merge(merged, raw)
    return merged


DET_CONFIGS = sorted((ROOT / "configs/detection").glob("*.yaml"))


@pytest.mark.parametrize("path", DET_CONFIGS, ids=[p.stem for p in DET_CONFIGS])
def test_every_detection_config_declares_its_reference(path):
    cfg = _yaml_merged(path)
    reference = cfg["VICREGL"]["REFERENCE"]
    assert set(reference) == {"total_batch", "norm", "precision", "lr", "iterations"}
    assert reference["total_batch"] == cfg["SOLVER"]["IMS_PER_BATCH"]
    assert reference["iterations"] == cfg["SOLVER"]["MAX_ITER"]
    assert reference["lr"] == cfg["SOLVER"]["BASE_LR"]
    assert reference["norm"] == "SyncBN" == cfg["MODEL"]["RESNETS"]["NORM"]
    assert reference["precision"] == "fp32"
