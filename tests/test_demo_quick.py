"""tools/demo.py end to end at --quick sizes on a part of the demo suite: synthetic data in the
real layouts, a real (2-step) VICRegL pretraining, conversion, the real segmentation tool,
detection when detectron2 is installed, the table, the verdict; then a rerun resumes without
running anything again. The numbers are meaningless at these sizes; the plumbing is not."""
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("mmseg", reason="the demo's segmentation needs MMSegmentation "
                    "(tools/setup_env.sh installs it)")


def demo(*args, timeout=420):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def test_quick_demo_runs_end_to_end_and_resumes(tmp_path):
    detection = importlib.util.find_spec("detectron2") is not None
    only = ["vicregl/voc_linear", "random/voc_linear", "random/coco_mask_rcnn"]
    out = demo("--quick", "--out", tmp_path, "--jobs", "2", "--only", *only)
    data = tmp_path / "data"
    assert (data / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").is_file()
    assert (data / "cityscapes").is_dir() and (data / "ade/ADEChallengeData2016").is_dir()
    assert len(list((data / "imagenet/train").rglob("*.jpg"))) == 64
    # progress: every step announced with its log, then finished
    for step in ("pretrain:vicregl", "convert:vicregl", "vicregl/voc_linear", "random/voc_linear"):
        assert f"] {step} (" in out and f"finished {step} in " in out, step
    suite = tmp_path / "suite"
    assert (suite / "pretrain/vicregl/backbone.pth").is_file()
    config = json.loads((suite / "pretrain/vicregl/config.json").read_text())
    assert config["loss"]["alpha"] == 0.75 and config["model"]["arch"] == "convnext_mini"
    results = json.loads((suite / "results.json").read_text())
    states = {r["id"]: r["status"] for r in results["rows"]}
    assert states["vicregl/voc_linear"] == states["random/voc_linear"] == "finished"
    assert states["vicreg/voc_linear"] == "pending"  # not asked for: stays in the table
    row = next(r for r in results["rows"] if r["id"] == "vicregl/voc_linear")
    assert row["backbone_record"]["arch"] == "convnext_mini"
    assert row["backbone_record"]["source"].endswith("pretrain/vicregl/backbone.pth")
    assert 0.0 <= row["metrics"]["mIoU"] <= 100.0 and row["cost"]["gpu_type"] == "cpu"
    if detection:
        assert states["random/coco_mask_rcnn"] == "finished"
        coco = next(r for r in results["rows"] if r["id"] == "random/coco_mask_rcnn")
        assert 0.0 <= coco["metrics"]["bbox_AP"] <= 100.0
    else:
        assert states["random/coco_mask_rcnn"] == "blocked"
        assert "detectron2 is not installed" in out
    # the table is printed and written; the verdict compares with random init
    assert "| VICRegL (alpha=0.75) |" in out and "| random init |" in out
    assert re.search(r"voc_linear +VICRegL \(alpha=0\.75\) +mIoU +[0-9.]+ +object classes", out)
    assert re.search(r"voc_linear +random init +mIoU", out)
    for name in ("table.md", "table.csv", "table.tex", "table.png"):
        assert (suite / "table" / name).is_file()

    # a second run resumes: nothing runs again
    again = demo("--quick", "--out", tmp_path, "--jobs", "2", "--only", *only)
    assert "data already written" in again
    assert not [line for line in again.splitlines() if line.startswith("  finished ")]
    assert "done     vicregl/voc_linear" in again
