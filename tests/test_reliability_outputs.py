"""Outputs over inputs (docs/reliability.md, "Configs and arguments").

``tools/export_backbone.py X X`` replaced the training checkpoint with its export, and
``tools/convert.py --source X --out X`` replaced its source. An output that is the same file
as an input (the same path, through a symlink, or a hard link) is now refused before anything
is read or written, naming both.
"""
import os
from pathlib import Path

import pytest
import torch

from conftest import load_tool
from pretrain.checkpoint import atomic_save, export_backbone
from transfer.weights import read_backbone


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from test_reliability_checkpoints import train_checkpoint

    folder = tmp_path_factory.mktemp("files")
    train = atomic_save(train_checkpoint("convnext_mini"), folder / "checkpoint.pth")
    export_backbone(torch.load(train, weights_only=True), folder / "backbone.pth", "test")
    return {"train": train, "export": folder / "backbone.pth"}


def aliases(original: Path, folder: Path) -> dict[str, Path]:
    """Other names of ``original``: itself, written another way, a symlink, a hard link."""
    folder.mkdir(exist_ok=True)
    (folder / "link.pth").symlink_to(original)
    os.link(original, folder / "hard.pth")
    return {"same": original, "dotted": original.parent / "." / original.name,
            "symlink": folder / "link.pth", "hardlink": folder / "hard.pth"}


@pytest.mark.parametrize("alias", ["same", "dotted", "symlink", "hardlink"])
def test_export_backbone_refuses_to_write_over_its_checkpoint(alias, files, tmp_path):
    work = tmp_path / "run"
    work.mkdir()
    checkpoint = work / "checkpoint.pth"
    checkpoint.write_bytes(files["train"].read_bytes())
    before = checkpoint.read_bytes()
    out = aliases(checkpoint, tmp_path / "aliases")[alias]
    with pytest.raises(SystemExit) as info:
        load_tool("export_backbone").main([str(checkpoint), str(out)])
    assert str(info.value) == (f"output {out} is the same file as checkpoint {checkpoint}; "
                               "expected another path (writing it would replace the input)")
    assert checkpoint.read_bytes() == before
    assert out.exists() and (alias != "symlink" or out.is_symlink())


@pytest.mark.parametrize("framework", ["mmseg", "detectron2"])
@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink"])
def test_convert_refuses_to_write_over_its_source(alias, framework, files, tmp_path):
    source = tmp_path / "backbone.pth"
    source.write_bytes(files["export"].read_bytes())
    before = source.read_bytes()
    out = aliases(source, tmp_path / "aliases")[alias]
    with pytest.raises(SystemExit) as info:
        load_tool("convert").main(["--framework", framework, "--arch", "convnext_mini",
                                   "--source", str(source), "--out", str(out), "--quiet"])
    assert f"--out {out} is the same file as --source {source}" in str(info.value)
    assert source.read_bytes() == before


def test_other_outputs_still_work(files, tmp_path):
    out = tmp_path / "b2.pth"
    assert load_tool("export_backbone").main([str(files["train"]), str(out)]) == 0
    assert read_backbone(out, "convnext_mini").sha256 == read_backbone(
        files["export"], "convnext_mini").sha256
    # a random source is no file: an output named like it is not "the same file"
    random_out = tmp_path / "random:0"
    assert load_tool("convert").main(["--framework", "mmseg", "--arch", "resnet18", "--source",
                                      "random:0", "--out", str(random_out), "--quiet"]) == 0


@pytest.mark.mmseg
def test_seg_test_refuses_a_training_work_dir_as_its_work_dir(tmp_path):
    """seg_test writes metrics.json into --work-dir: into the training run's folder it would
    replace that run's metrics.json."""
    pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")
    from transfer.mmseg_side.runner import RUN_MARKER

    work = tmp_path / "work"
    work.mkdir()
    (work / RUN_MARKER).write_text("{}")
    (work / "metrics.json").write_text('{"metrics": {"mIoU": 1.0}}')
    (work / "iter_2.pth").write_bytes(b"stand-in")
    with pytest.raises(SystemExit) as info:
        load_tool("seg_test").main(["configs/segmentation/linear_convnext_small_voc12aug_40k.py",
                                    str(work / "iter_2.pth"), "--work-dir", str(work)])
    assert f"--work-dir {work} is a seg_train work dir (it holds {RUN_MARKER})" in str(
        info.value)
    assert (work / "metrics.json").read_text() == '{"metrics": {"mIoU": 1.0}}'
    assert sorted(p.name for p in work.iterdir()) == ["iter_2.pth", "metrics.json", RUN_MARKER]
