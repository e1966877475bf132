"""tools/demo.py --quick end to end: synthetic data in the real layouts (pretraining ImageFolder
with train and val), two real (2-step) pretrainings, 2 seeds of the real linear segmentation
(given the backbone's source, converted by seg_train itself), dense retrieval and k-NN
classification tools for three backbones, the tables, the pictures, the verdicts; then a rerun
resumes without running anything again.

The missing-extra path runs on every machine: detectron2 is hidden on purpose
(VICREGL_HIDE_EXTRAS=detectron2), the detection row must be ``missing_extra`` and the demo must
exit 0. Where detectron2 is really installed, a second test checks that its row finishes. The
numbers are meaningless at these sizes; the plumbing is not."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from transfer import extras

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.mmseg, pytest.mark.multiprocess]
pytest.importorskip("mmseg", reason="the demo's segmentation needs MMSegmentation "
                    "(tools/setup_env.sh installs it)")


def demo(*args, hide: str | None, timeout: int = 900) -> str:
    """Run the demo; ``hide``: the VICREGL_HIDE_EXTRAS value (None: unset). Asserts exit 0."""
    env = dict(os.environ)
    env.pop(extras.HIDE_ENV, None)
    if hide:
        env[extras.HIDE_ENV] = hide
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    return proc.stdout


def rows_by_id(suite: Path) -> dict[str, dict]:
    return {r["id"]: r for r in json.loads((suite / "results.json").read_text())["rows"]}


def check_data(data: Path) -> None:
    assert (data / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").is_file()
    assert (data / "cityscapes").is_dir() and (data / "ade/ADEChallengeData2016").is_dir()
    for split in ("train", "val"):
        assert list((data / "imagenet" / split).rglob("*.jpg")), split


def check_rows(suite: Path) -> None:
    rows = rows_by_id(suite)
    detection = rows["random/coco_mask_rcnn"]
    assert detection["status"] == "missing_extra"
    assert "detectron2" in detection["reason"] and extras.HIDE_ENV in detection["reason"]
    for bb in ("vicreg", "vicregl", "random"):
        for exp, finished in (("voc_linear", 2), ("voc_nn", 1), ("imagenet_knn", 1)):
            seeds = [s["status"] for s in rows[f"{bb}/{exp}"]["seeds"]]
            assert seeds == ["finished"] * finished + ["pending"] * (3 - finished), (bb, exp)
        assert rows[f"{bb}/cityscapes_linear"]["status"] == "pending"  # not in --quick
    nn = json.loads((suite / "runs/vicregl/voc_nn/seed0/metrics.json").read_text())
    assert nn["task"] == "dense_retrieval" and 0.0 <= nn["metrics"]["mIoU"] <= 100.0
    knn = json.loads((suite / "runs/vicreg/imagenet_knn/seed0/metrics.json").read_text())
    assert knn["task"] == "classification" and 0.0 <= knn["metrics"]["top1"] <= 100.0
    seg = json.loads((suite / "runs/vicregl/voc_linear/seed0/metrics.json").read_text())
    # every evaluation reads the backbone whose BatchNorm statistics were recomputed
    assert seg["backbone"]["source"].endswith("backbones/vicregl/backbone.pth")
    # seg_train converted it once for the row's seeds, into the row's folder
    assert (suite / "runs/vicregl/voc_linear/backbone_resnet_nano.pth").is_file()
    assert seg["backbone"]["bn_recalibration"]["images"] == 64  # the whole --quick train split
    config = json.loads((suite / "pretrain/vicregl/config.json").read_text())
    assert config["loss"]["alpha"] == 0.75 and config["model"]["arch"] == "resnet_nano"
    assert config["data"]["pipeline"] == "memory"


def check_output(out: str, suite: Path) -> None:
    for stage in range(1, 6):
        assert f"[demo {stage}/5]" in out
    assert re.search(r"\[demo\] \d+/\d+ steps done.*ETA ~\d+m\d\ds", out)
    for step in ("pretrain:vicregl", "recalibrate:random",
                 "random/voc_nn/seed0", "vicreg/imagenet_knn/seed0"):
        assert f"] {step} (" in out and f"finished {step} in " in out, step
    # a row's seeds run in one process (--seeds), each seed still has its own result line
    assert "] vicregl/voc_linear/seed{0,1} in one process (" in out
    for seed in (0, 1):
        assert f"finished vicregl/voc_linear/seed{seed} in " in out
    assert "missing_extra" in out and "detectron2" in out
    # the verdicts: the rule, each claimed pair against the spread, the summary
    assert "rule: a difference counts when it exceeds 2 x the larger seed std" in out
    assert re.search(r"VOC linear \(synthetic\) \(dense, mIoU\): VICReg", out)
    assert re.search(r"VICRegL \(alpha=0\.75\) > VICReg \(alpha=1\): difference [-+][0-9.]+, "
                     r"(exceeds|within) the spread", out)  # VOC linear: 2 seeds
    assert re.search(r"VICReg \(alpha=1\) >= VICRegL \(alpha=0\.75\): difference [-+][0-9.]+, "
                     r"spread unknown \(one seed\)", out)  # k-NN: 1 seed
    assert re.search(r"SUMMARY: .* reached on \d of 2 dense task\(s\).*; 4 without results", out)
    assert re.search(r"SUMMARY: VICReg \(alpha=1\) and VICRegL \(alpha=0\.75\) > random init on "
                     r"\d of 3 task\(s\)", out)
    # the pictures exist and their paths are printed
    listed = out.split("pictures:")[1].split("demo finished")[0]
    table = suite / "table"
    for name in ("table.png", "pca_maps.png"):
        assert (table / name).is_file() and str(table / name) in listed, name
    assert len(re.findall(r"\.png", listed)) >= 3  # the trade-off plot too
    assert "missing_extra" in (table / "table.md").read_text()


def test_quick_demo_without_detectron2_then_resumes(tmp_path):
    out = demo("--quick", "--out", tmp_path, "--jobs", "2", "--progress-every", "5",
               hide="detectron2")
    check_data(tmp_path / "data")
    check_rows(tmp_path / "suite")
    check_output(out, tmp_path / "suite")

    again = demo("--quick", "--out", tmp_path, "--jobs", "2", hide="detectron2")
    assert "data already written" in again
    assert not [line for line in again.splitlines() if line.startswith("  finished ")]
    assert "done     vicregl/voc_linear/seed0" in again and "SUMMARY:" in again


@pytest.mark.detectron2
@pytest.mark.skipif(not extras.available("detectron2"),
                    reason="detectron2 is not installed (or hidden): optional extra, "
                           "tools/install_detectron2.sh")
def test_quick_demo_detection_row_finishes_with_detectron2(tmp_path):
    out = demo("--quick", "--out", tmp_path, "--only", "random/coco_mask_rcnn", hide=None)
    assert "finished random/coco_mask_rcnn in " in out
    row = rows_by_id(tmp_path / "suite")["random/coco_mask_rcnn"]
    assert row["status"] == "finished" and 0.0 <= row["metrics"]["bbox_AP"] <= 100.0
