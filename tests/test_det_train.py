"""tools/det_train.py end to end on the CPU: tiny checkpoints converted on the fly, a few
iterations of Mask R-CNN FPN (ResNet-18, ConvNeXt-mini), Mask R-CNN SimpleFeaturePyramid
(resnet_nano) and Faster R-CNN C4 (ResNet-18) on the synthetic sets, real evaluation,
metrics.json; then resume and eval-only."""
import json
import os
import subprocess
import sys
from importlib.metadata import version as importlib_version
from pathlib import Path

import pytest

from pretrain.synthetic import NUM_CLASSES  # noqa: E402
from transfer.extras import missing_reason  # noqa: E402

# absent, or hidden by VICREGL_HIDE_EXTRAS=detectron2: the reason says which and how to install
pytest.importorskip("detectron2",
                    reason=missing_reason("detectron2") or "detectron2 does not import")

import torch  # noqa: E402

from pretrain.backbones import build_backbone  # noqa: E402
from pretrain.checkpoint import export_backbone  # noqa: E402
from pretrain.synthetic import CLASS_NAMES  # noqa: E402
from transfer.detectron2_side.conversion import convert_resnet, write_pkl  # noqa: E402
from transfer.metrics import read_metrics  # noqa: E402
from transfer.synthetic.detection import write_coco, write_voc_detection  # noqa: E402
from transfer.weights import read_backbone  # noqa: E402
from conftest import THREADS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "detection"
# Tiny CPU settings: 128 px images, batch 2, 3 iterations, few proposals, thin heads. The
# score threshold 0 keeps low-confidence detections so that AP is computed, not NaN.
TINY = ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)", "SOLVER.WARMUP_ITERS", "1",
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
        "TEST.PRECISE_BN.NUM_ITER", "2", "MODEL.ROI_HEADS.NUM_CLASSES", str(NUM_CLASSES),
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "TEST.DETECTIONS_PER_IMAGE", "20", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "50"]
THIN_FPN = ["MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.CONV_DIM", "64",
            "MODEL.ROI_BOX_HEAD.FC_DIM", "128", "MODEL.ROI_MASK_HEAD.CONV_DIM", "64"]
R18 = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
SYN_COCO = ["DATASETS.TRAIN", '("synthetic_coco_train",)',
            "DATASETS.TEST", '("synthetic_coco_val",)']
SYN_VOC = ["DATASETS.TRAIN", '("synthetic_voc_2007_trainval", "synthetic_voc_2012_trainval")',
           "DATASETS.TEST", '("synthetic_voc_2007_test",)']


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    write_coco(root / "data", num_train=8, num_val=4, size=128, seed=0)
    write_voc_detection(root / "data", num_train=8, num_val=4, size=128, seed=0)
    torch.manual_seed(0)
    for arch in ("resnet18", "convnext_mini"):
        state = build_backbone(arch).state_dict()
        export_backbone({"arch": arch, "model": {f"backbone.{k}": v for k, v in state.items()},
                         "step": 1}, root / f"{arch}.pth", source="test")
    return root


def det_train(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "det_train.py"), *map(str, args)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return run.stdout + run.stderr


def check_metrics(out: Path, task: str, arch: str, keys):
    record = read_metrics(out / "metrics.json")
    assert record["task"] == task and record["backbone"]["arch"] == arch
    assert record["backbone"]["kind"] == "ours-export" and len(record["backbone"]["sha256"]) == 64
    assert record["cost"]["gpus"] == 0 and record["max_iter"] == 3
    for key in keys:  # AP is a number in [0, 100], not NaN (tiny runs score near 0)
        assert 0.0 <= record["metrics"][key] <= 100.0, (key, record["metrics"])
    return record


@pytest.mark.slow
def test_mask_rcnn_fpn_resnet(workspace):
    out = workspace / "fpn_r18"
    log = det_train("--config-file", CONFIGS / "mask_rcnn_resnet50_fpn_1x_coco.yaml",
                    "--backbone", workspace / "resnet18.pth", "--data-root", workspace / "data",
                    *TINY, *THIN_FPN, *R18, *SYN_COCO, "OUTPUT_DIR", out, "SEED", "7")
    assert "layer3.0.downsample.1.running_var" in log
    assert "100 tensors converted, 20 counters dropped, 0 unmatched" in log  # the key map
    assert "all 100 backbone tensors loaded and checked equal" in log
    record = check_metrics(out, "instance_segmentation", "resnet18",
                           ["bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50"])
    assert record["protocol"] == "finetune_fpn_1x" and record["dataset"] == "coco2017"
    assert record["config"] == "configs/detection/mask_rcnn_resnet50_fpn_1x_coco.yaml"
    assert set(record["metrics"]["per_class"]["bbox"]) == set(CLASS_NAMES)
    assert (out / "backbone_resnet18.pkl").is_file() and (out / "model_final.pth").is_file()
    # the protocol fingerprint: this run's settings beside the config's VICREGL.REFERENCE
    settings, reference = record["settings"], record["reference_settings"]
    assert {k: settings[k] for k in ("total_batch", "processes", "gpus", "norm", "iterations",
                                     "precision", "lr", "seed")} == {
        "total_batch": 2, "processes": 1, "gpus": 0, "norm": "SyncBN", "iterations": 3,
        "precision": "fp32", "lr": 0.02, "seed": 7}
    assert settings["min_size_train"] == [128] and len(settings["config_sha256"]) == 64
    assert settings["frameworks"]["detectron2"].split("+")[0] == importlib_version("detectron2")
    assert reference == {"total_batch": 16, "norm": "SyncBN", "precision": "fp32", "lr": 0.02,
                         "iterations": 90000}

    # resume: continues from the saved iteration, not from scratch
    log = det_train("--config-file", CONFIGS / "mask_rcnn_resnet50_fpn_1x_coco.yaml",
                    "--resume", "--data-root", workspace / "data", *TINY, *THIN_FPN, *R18,
                    *SYN_COCO, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", out)
    assert "Starting training from iteration 3" in log
    assert read_metrics(out / "metrics.json")["backbone"]["source"].endswith("resnet18.pth")

    # eval-only on the trained weights; the backbone record comes from the run's folder
    evaluation = workspace / "fpn_r18_eval"
    det_train("--config-file", CONFIGS / "mask_rcnn_resnet50_fpn_1x_coco.yaml", "--eval-only",
              "--data-root", workspace / "data", *TINY, *THIN_FPN, *R18, *SYN_COCO,
              "MODEL.WEIGHTS", out / "model_final.pth", "OUTPUT_DIR", evaluation)
    record = json.loads((evaluation / "metrics.json").read_text())
    assert record["eval_only"] and record["backbone"]["arch"] == "resnet18"
    assert record["metrics"]["bbox_AP"] is not None


@pytest.mark.slow
def test_mask_rcnn_fpn_convnext(workspace):
    out = workspace / "fpn_convnext"
    log = det_train("--config-file", CONFIGS / "mask_rcnn_convnext_small_fpn_1x_coco.yaml",
                    "--backbone", workspace / "convnext_mini.pth",
                    "--data-root", workspace / "data", *TINY, *THIN_FPN, *SYN_COCO,
                    "MODEL.CONVNEXT.ARCH", "convnext_mini", "OUTPUT_DIR", out)
    assert "convnext_mini: 58 of 58 backbone tensors matched" in log
    # the ResNet's path: converted, loaded by detectron2's checkpointer, checked
    assert "56 tensors converted, 2 final-norm tensors dropped, 0 unmatched" in log
    assert "all 56 backbone tensors loaded and checked equal" in log
    assert (out / "backbone_convnext_mini.pkl").is_file()
    record = check_metrics(out, "instance_segmentation", "convnext_mini",
                           ["bbox_AP", "bbox_AP50", "segm_AP"])
    assert record["protocol"] == "finetune_fpn_1x_adamw"


@pytest.mark.slow
def test_mask_rcnn_sfp_resnet_nano(workspace):
    """The CPU demo's detection row: resnet_nano from random:0 under SimpleFeaturePyramid."""
    out = workspace / "sfp_nano"
    log = det_train("--config-file", CONFIGS / "mask_rcnn_resnet_nano_sfp_1x_coco.yaml",
                    "--backbone", "random:0", "--data-root", workspace / "data",
                    *TINY, *THIN_FPN, *SYN_COCO, "OUTPUT_DIR", out)
    assert "60 tensors converted, 12 counters dropped, 0 unmatched" in log
    assert "all 60 backbone tensors loaded and checked equal" in log
    assert (out / "backbone_resnet_nano.pkl").is_file() and (out / "model_final.pth").is_file()
    record = read_metrics(out / "metrics.json")
    assert record["task"] == "instance_segmentation" and record["protocol"] == "cpu_demo_sfp_1x"
    assert record["backbone"]["arch"] == "resnet_nano"
    assert record["backbone"]["kind"] == "random" and record["max_iter"] == 3
    assert record["settings"]["norm"] == "SyncBN"  # MODEL.RESNETS.NORM, the trunk's
    for key in ("bbox_AP", "bbox_AP50", "segm_AP"):
        assert 0.0 <= record["metrics"][key] <= 100.0, (key, record["metrics"])


@pytest.mark.slow
def test_faster_rcnn_c4_voc(workspace):
    out = workspace / "c4_voc"
    log = det_train("--config-file", CONFIGS / "faster_rcnn_resnet50_c4_voc0712_24k.yaml",
                    "--backbone", workspace / "resnet18.pth", "--data-root", workspace / "data",
                    *TINY, *R18, *SYN_VOC, "OUTPUT_DIR", out)
    assert "all 100 backbone tensors loaded and checked equal" in log  # res5 in the RoI head
    record = check_metrics(out, "detection", "resnet18", ["bbox_AP", "bbox_AP50", "bbox_AP75"])
    assert record["protocol"] == "finetune_c4_24k" and record["dataset"] == "voc07+12"
    assert "per_class" not in record["metrics"]  # the VOC evaluator reports means only


@pytest.mark.slow
def test_pkl_from_the_converter_as_model_weights(workspace):
    """The tools/convert.py route: a .pkl written by write_pkl, passed as MODEL.WEIGHTS."""
    weights = read_backbone(workspace / "resnet18.pth", "resnet18")
    pkl = write_pkl(workspace / "r18.pkl", convert_resnet(weights)[0], weights.info())
    out = workspace / "fpn_pkl"
    log = det_train("--config-file", CONFIGS / "mask_rcnn_resnet50_fpn_1x_coco.yaml",
                    "--data-root", workspace / "data", *TINY, *THIN_FPN, *R18, *SYN_COCO,
                    "SOLVER.MAX_ITER", "1", "MODEL.WEIGHTS", pkl, "OUTPUT_DIR", out)
    assert "all 100 backbone tensors loaded and checked equal" in log
    assert read_metrics(out / "metrics.json")["backbone"]["sha256"] == weights.sha256


@pytest.mark.slow
def test_bad_inputs_fail_clearly(workspace, tmp_path):
    config = CONFIGS / "faster_rcnn_resnet50_c4_voc0712_24k.yaml"
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "det_train.py"), "--config-file", str(config),
         "--backbone", str(workspace / "convnext_mini.pth"), "--data-root", str(workspace / "data"),
         *TINY, *R18, *SYN_VOC, "OUTPUT_DIR", str(tmp_path / "x")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "convnext_mini backbone, not resnet18" in run.stderr
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "det_train.py"), "--config-file", str(config),
         "--backbone", str(workspace / "resnet18.pth"), "--data-root", str(tmp_path / "empty"),
         *TINY, *R18, "OUTPUT_DIR", str(tmp_path / "y")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "voc_2007_trainval: " in run.stderr
    assert "VOC2007/ImageSets/Main/trainval.txt does not exist" in run.stderr
