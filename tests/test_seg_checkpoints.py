"""Strict loading: conversion, the check that the backbone holds the weights read, and the
weights_only policy."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")

from mmengine.logging.history_buffer import HistoryBuffer  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402

import transfer.mmseg_side.register  # noqa: E402,F401
from pretrain.weight_files import load_state_file  # noqa: E402
from transfer.conversion import convert_into  # noqa: E402
from transfer.mmseg_side.checkpoint import (MMSEG_FORMAT, verify_backbone,  # noqa: E402
                                            write_checkpoint)
from transfer.mmseg_side.runner import RUN_MARKER, checkpoint_trust  # noqa: E402
from transfer.weights import read_backbone  # noqa: E402
from conftest import THREADS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
init_default_scope("mmseg")
torch.set_num_threads(THREADS)


def run_tool(*args, **kwargs):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, **kwargs)


def pretrained(checkpoint, **cfg):
    return MODELS.build(dict(cfg, init_cfg=dict(type="Pretrained", checkpoint=str(checkpoint),
                                                prefix="backbone.")))


@pytest.mark.slow
def test_convert_writes_the_mmseg_format_and_prints_the_key_map(tmp_path):
    out = tmp_path / "r18.pth"
    result = run_tool("tools/convert.py", "--framework", "mmseg", "--arch", "resnet18",
                      "--source", "random:5", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "conv1.weight" in result.stdout and "-> backbone.conv1.weight" in result.stdout
    assert "120 tensors renamed, 0 unmatched" in result.stdout
    assert "strict load into the mmseg backbone: 120 tensors" in result.stdout
    raw = load_state_file(out)
    assert raw["meta"]["format"] == MMSEG_FORMAT and raw["meta"]["arch"] == "resnet18"
    assert raw["meta"]["backbone"]["sha256"] == read_backbone("random:5", "resnet18").sha256
    assert torch.load(out, weights_only=True)  # loadable without any allow-list


@pytest.mark.slow
def test_convert_refuses_a_checkpoint_of_another_architecture(tmp_path):
    source = tmp_path / "r18.pth"
    torch.save(read_backbone("random:0", "resnet18").state_dict, source)
    result = run_tool("tools/convert.py", "--framework", "mmseg", "--arch", "resnet34",
                      "--source", source, "--out", tmp_path / "out.pth")
    assert result.returncode != 0
    assert str(source) in result.stderr and "missing keys" in result.stderr
    assert not (tmp_path / "out.pth").exists()


def test_a_conversion_goes_into_the_run_folder_and_reads_back_as_its_source(tmp_path):
    """What seg_train writes for mmseg's Pretrained init: the source's tensors under
    ``backbone.``, its provenance; read back (e.g. given as --backbone again) it is the same
    backbone."""
    converted = convert_into("random:3", "resnet18", tmp_path / "run", "mmseg")
    assert converted.path == tmp_path / "run" / "backbone_resnet18.pth"
    raw = torch.load(converted.path, weights_only=True)  # loadable without any allow-list
    assert raw["meta"]["format"] == MMSEG_FORMAT
    assert raw["meta"]["backbone"] == converted.weights.info()
    assert read_backbone(converted.path, "resnet18").sha256 == converted.weights.sha256
    assert "120 tensors renamed, 0 unmatched" in converted.report()


def test_pretrained_init_is_lenient_and_verify_backbone_is_not(tmp_path):
    """mmengine's Pretrained init leaves a missing tensor at random init and only logs;
    verify_backbone, comparing with the weights that were read, names it."""
    weights = read_backbone("random:0", "convnext_mini")
    good = tmp_path / "good.pth"
    write_checkpoint(good, weights)
    model = pretrained(good, type="VICRegLConvNeXt", arch="convnext_mini")
    model.init_weights()
    assert "values checked equal" in verify_backbone(model, weights.state_dict, str(good))

    tampered = torch.load(good, weights_only=True)
    del tampered["state_dict"]["backbone.stages.2.1.pwconv1.weight"]
    bad = tmp_path / "bad.pth"
    torch.save(tampered, bad)
    torch.manual_seed(1)  # the model's own init is not the weights read (seed 0)
    model = pretrained(bad, type="VICRegLConvNeXt", arch="convnext_mini")
    model.init_weights()  # no error from mmengine
    with pytest.raises(ValueError, match=r"values differ after loading: stages\.2\.1\.pwconv1"):
        verify_backbone(model, weights.state_dict, str(bad))


def test_verify_backbone_rejects_a_wrong_architecture(tmp_path):
    path = tmp_path / "r18.pth"
    weights = read_backbone("random:0", "resnet18")
    write_checkpoint(path, weights)
    model = pretrained(path, type="ResNet", depth=34, style="pytorch")
    model.init_weights()
    with pytest.raises(ValueError, match=f"weights {path} do not fit the backbone "
                                         "ResNet.*not in the weights.*layer1.2"):
        verify_backbone(model, weights.state_dict, str(path))


def fake_mmengine_checkpoint(path: Path) -> Path:
    """What mmengine pickles into its checkpoints besides tensors."""
    buffer = HistoryBuffer()
    buffer.update(np.float64(0.5))
    torch.save({"meta": {"iter": 2, "seed": np.int64(0)}, "state_dict": {"w": torch.ones(2)},
                "message_hub": {"log_scalars": {"train/lr": buffer}},
                "optimizer": {"state": {}, "param_groups": []}}, path)
    return path


def test_mmengine_checkpoints_load_only_from_a_seg_train_work_dir(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = fake_mmengine_checkpoint(run_dir / "iter_2.pth")
    with pytest.raises(RuntimeError, match=f"{RUN_MARKER}"):
        with checkpoint_trust(path, run_dir):
            torch.load(path)
    (run_dir / RUN_MARKER).write_text("{}")
    with checkpoint_trust(path, run_dir) as trusted:
        assert trusted and torch.load(path)["meta"]["iter"] == 2
    elsewhere = fake_mmengine_checkpoint(tmp_path / "elsewhere.pth")
    with pytest.raises(RuntimeError, match="weights_only"):
        with checkpoint_trust(elsewhere, run_dir):  # not inside the trusted dir
            torch.load(elsewhere)


class Exploit:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_the_allow_list_still_refuses_code(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / RUN_MARKER).write_text("{}")
    path = run_dir / "evil.pth"
    torch.save({"meta": Exploit()}, path)
    with pytest.raises(Exception, match="print|Unsupported global"):
        with checkpoint_trust(path, run_dir):
            torch.load(path)
