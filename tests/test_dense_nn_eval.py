"""tools/dense_nn_eval.py end to end on the CPU: the synthetic VOC aug and ADE20k layouts read
by mmseg's own dataset classes through the suite's configs, metrics.json checked; a wrong
data root fails with the layout check's message."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")

from transfer.synthetic.segmentation import write_ade20k, write_voc12aug  # noqa: E402
from conftest import THREADS  # noqa: E402

pytestmark = [pytest.mark.mmseg, pytest.mark.multiprocess]

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
VOC = "configs/segmentation/linear_convnext_small_voc12aug_40k.py"
ADE = "configs/segmentation/linear_convnext_small_ade20k_160k.py"
TINY = ["--arch", "convnext_mini", "--backbone", "random:0", "--crop-size", "64",
        "--workers", "0", "--batch-size", "4"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    write_voc12aug(root, num_train=6, num_val=3, size=64, seed=0)
    write_ade20k(root, num_train=4, num_val=2, size=64, seed=0)
    return root


def run_tool(config, *args):
    return subprocess.run([sys.executable, "tools/dense_nn_eval.py", config, *TINY,
                           *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True)


@pytest.mark.slow
def test_voc_metrics_json(data_root, tmp_path):
    out = run_tool(VOC, "--data-root", data_root, "--work-dir", tmp_path,
                   "--memory-fraction", "0.5", "--seed", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert (record["task"], record["protocol"], record["dataset"]) == \
        ("dense_retrieval", "dense_nn", "voc12aug")
    metrics = record["metrics"]
    assert len(metrics["per_class"]) == 21 and 0 <= metrics["mIoU"] <= 100
    # the synthetic world uses labels 0..8 of VOC's 21: the rest are never in the ground
    # truth; never predicted either (the memory holds only present classes) -> null
    assert all(metrics["per_class"][name] is None for name in list(metrics["per_class"])[9:])
    assert metrics["per_class"]["background"] is not None
    settings, reference = record["settings"], record["reference_settings"]
    assert settings["k"] == reference["k"] == 30
    assert settings["temperature"] == reference["temperature"] == 0.02
    assert settings["memory_fraction"] == 0.5 and reference["memory_fraction"] == 1.0
    assert settings["crop"] == [64, 64] and reference["crop"] == [512, 512]
    assert settings["seed"] == 1 and len(settings["config_sha256"]) == 64
    assert record["memory_images"] == 3 and record["train_images"] == 6
    # 3 crops of 64 px -> 2 x 2 cells each; unlabelled (void-only) cells are left out
    assert 0 < settings["memory_entries"] <= 12
    assert record["val_images"] == 3 and record["backbone"]["source"] == "random:0"


@pytest.mark.slow
def test_ade20k_reduce_zero_label(data_root, tmp_path):
    out = run_tool(ADE, "--data-root", data_root, "--work-dir", tmp_path,
                   "--label-pooling", "majority", "--features", "concat")
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "metrics.json").read_text())
    per_class = record["metrics"]["per_class"]
    # 150 classes, label 0 ("other", the synthetic outline) ignored; background -> wall (0)
    assert len(per_class) == 150 and per_class["wall"] is not None
    assert record["settings"]["features"] == "concat"
    assert record["dataset"] == "ade20k"


@pytest.mark.slow
def test_wrong_data_root_names_the_missing_folder(tmp_path):
    out = run_tool(VOC, "--data-root", tmp_path / "nowhere", "--work-dir", tmp_path / "w")
    assert out.returncode != 0
    assert "nowhere/VOCdevkit/VOC2012" in out.stderr


@pytest.mark.slow
def test_several_seeds_in_one_process_then_a_rerun_skips_them(data_root, tmp_path):
    out = run_tool(VOC, "--data-root", data_root, "--work-dir", tmp_path,
                   "--memory-fraction", "0.5", "--seeds", "0", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads((tmp_path / f"seed{s}" / "metrics.json").read_text()) for s in (0, 1)]
    assert [r["settings"]["seed"] for r in records] == [0, 1]
    assert all(r["memory_images"] == 3 for r in records)
    assert not (tmp_path / "metrics.json").exists()  # --seeds writes only the seed folders
    stamps = [(tmp_path / f"seed{s}" / "metrics.json").stat().st_mtime_ns for s in (0, 1)]
    (tmp_path / "seed1" / "metrics.json").write_text("{\"task\": ")  # torn by a kill
    again = run_tool(VOC, "--data-root", data_root, "--work-dir", tmp_path,
                     "--memory-fraction", "0.5", "--seeds", "0", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "seed 0: " in again.stdout and "is complete, skipped" in again.stdout
    assert (tmp_path / "seed0" / "metrics.json").stat().st_mtime_ns == stamps[0]
    assert json.loads((tmp_path / "seed1" / "metrics.json").read_text())["settings"]["seed"] == 1
    both = run_tool(VOC, "--data-root", data_root, "--work-dir", tmp_path, "--seed", "0",
                    "--seeds", "1")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
