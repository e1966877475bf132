"""Bad configs and arguments (docs/reliability.md, "Configs and arguments").

Each must stop the tool with a message naming the key (or path) and the expected value,
before a dataset, a model or a worker is built.
"""
import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

from pretrain.common.preflight import check_output_dir
from pretrain.config import ConfigValueError, check_pretrain_config, load_config
from conftest import load_tool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml"
# a data root that does not exist: a config error must come before the dataset is looked at
NO_DATA = ["data.kind=imagefolder", "data.root=/nonexistent/imagenet"]



def pretrain_error(*overrides: str, config=SMOKE) -> str:
    """The message tools/pretrain.py stops with (in this process, no training starts)."""
    with pytest.raises(SystemExit) as info:
        load_tool("pretrain").main(["--config", str(config), *overrides])
    return str(info.value)


def test_unknown_key_in_the_recipe_names_file_and_key(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(SMOKE.read_text().replace("  epochs: 4", "  epoch: 4"))
    message = pretrain_error(config=recipe)
    assert f"recipe {recipe}" in message and "unknown config key 'optim.epoch'" in message
    assert "known here:" in message and "epochs" in message


def test_unknown_key_in_an_override():
    message = pretrain_error("loss.alfa=0.5")
    assert "override 'loss.alfa=0.5'" in message and "unknown config key 'loss.alfa'" in message


@pytest.mark.parametrize("override, expected", [
    ("optim.epochs=ten", "config key optim.epochs = 'ten' (str): expected an integer"),
    ("optim.epochs=2.5", "config key optim.epochs = 2.5 (float): expected an integer"),
    ("loss.alpha=high", "config key loss.alpha = 'high' (str): expected a number"),
    ("optim.base_lr=5e-4", "expected a number (write 5.0e-4, not 5e-4"),
    ("data.size_crops=96", "config key data.size_crops = 96 (int): expected a list"),
    ("run.probe=1", "config key run.probe = 1 (int): expected true or false"),
    ("optim=3", "config key optim must be a mapping"),
    ("optim.epochs=[1", "override 'optim.epochs=[1': the value is not valid YAML"),
])
def test_wrong_type_names_key_and_expected_type(override, expected):
    assert expected in pretrain_error(override, *NO_DATA)


def test_wrong_type_in_a_recipe_file(tmp_path):
    recipe = tmp_path / "quoted.yaml"
    recipe.write_text(SMOKE.read_text().replace("batch_size: 32", "batch_size: '32'"))
    message = pretrain_error(config=recipe)
    assert f"recipe {recipe}" in message and "optim.batch_size = '32' (str)" in message


@pytest.mark.parametrize("override, expected", [
    ("optim.batch_size=0", "optim.batch_size = 0: expected an integer >= 1"),
    ("optim.batch_size=-8", "optim.batch_size = -8: expected an integer >= 1"),
    ("optim.epochs=0", "optim.epochs = 0: expected an integer >= 1"),
    ("loss.alpha=1.5", "loss.alpha = 1.5: expected a number in [0.0, 1.0]"),
    ("loss.alpha=-0.1", "loss.alpha = -0.1: expected a number in [0.0, 1.0]"),
    ("data.size_crops=[96,16]", "data.size_crops[1] = 16: convnext_mini (output stride 32) "
                                "makes no local grid from it"),
    ("data.num_crops=[2]", "expected non-empty lists of one length"),
    ("data.min_scale_crops=[0.5,0.6]", "data.min_scale_crops[1], data.max_scale_crops[1] = "
                                       "0.6, 0.3: expected 0 < min <= max <= 1"),
    ("optim.warmup_epochs=9", "optim.warmup_epochs = 9: expected <= optim.epochs (4)"),
    ("run.precision=fp8", "run.precision = 'fp8': expected one of fp16, bf16, fp32"),
    ("data.num_workers=-1", "data.num_workers = -1: expected an integer >= 0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay = -0.1: expected a finite number >= 0.0"),
    ("run.checkpoint_every_steps=0", "run.checkpoint_every_steps = 0: expected an integer >= 1"),
    ("model.arch=resnet18", "model.fuse_views = true with model.arch=resnet18: expected false"),
    ("model.mlp=512x512", "model.mlp = '512x512': expected layer widths joined by '-'"),
])
def test_out_of_range_values_name_key_and_range(override, expected):
    started = time.time()
    message = pretrain_error(override, *NO_DATA)
    assert expected in message, message
    assert "/nonexistent" not in message  # the config was checked before the data
    assert time.time() - started < 30


def test_every_problem_is_listed_at_once():
    cfg = load_config(SMOKE, ["optim.batch_size=0", "loss.alpha=2.0"])
    with pytest.raises(ConfigValueError, match="2 bad value"):
        check_pretrain_config(cfg)


def test_the_batch_must_split_over_the_processes():
    cfg = load_config(SMOKE)  # batch 32
    check_pretrain_config(cfg, world_size=4)
    with pytest.raises(ConfigValueError, match="optim.batch_size = 32: expected a multiple of "
                                               "the 3 processes"):
        check_pretrain_config(cfg, world_size=3)
    # a SLURM submission knows its processes: refused before anything is submitted
    assert "optim.batch_size = 32: expected a multiple of the 3 processes" in pretrain_error(
        "--slurm", "--nodes", "1", "--gpus-per-node", "3")


def test_the_engine_checks_too(tmp_path):
    """train() called directly (SLURM jobs, tests) checks the values before any work."""
    from pretrain.engine import train

    cfg = load_config(SMOKE, ["loss.alpha=1.5", f"run.output_dir={tmp_path / 'run'}", *NO_DATA])
    with pytest.raises(ConfigValueError, match="loss.alpha = 1.5"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_recipe_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "absent.yaml"
    assert f"recipe {missing} does not exist (see configs/pretrain/)" in pretrain_error(
        config=missing)


def test_recipe_that_is_not_a_mapping(tmp_path):
    recipe = tmp_path / "list.yaml"
    recipe.write_text("- model\n- loss\n")
    assert f"recipe {recipe}: expected a mapping of sections" in pretrain_error(config=recipe)


def test_every_shipped_recipe_passes_the_checks():
    for recipe in sorted((ROOT / "configs/pretrain").glob("*.yaml")):
        check_pretrain_config(load_config(recipe))


# ---- output folders ------------------------------------------------------------------------
def test_output_dir_under_a_regular_file(tmp_path):
    from pretrain.engine import train

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = load_config(SMOKE, [f"run.output_dir={blocker / 'run'}"])
    with pytest.raises(NotADirectoryError) as info:
        train(cfg)
    assert f"run.output_dir {blocker / 'run'}: {blocker} is a regular file" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="permission bits do not stop root: as root, the "
                    "read-only tmpfs tests of tests/test_reliability_mounts.py cover this")
def test_read_only_output_dir(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=f"out {folder / 'x'}: cannot write in {folder}"):
            check_output_dir(folder / "x", "out")
    finally:
        folder.chmod(0o700)


def test_check_output_dir_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_output_dir(target, "out") == target
    assert list(tmp_path.iterdir()) == []


def test_export_and_convert_outputs_under_a_regular_file(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match=f"output {blocker / 'b.pth'}: folder {blocker}: {blocker} is a regular"):
        load_tool("export_backbone").main([str(tmp_path / "absent.pth"), str(blocker / "b.pth")])
    with pytest.raises(SystemExit, match=f"--out {blocker / 'm.pth'}: folder {blocker}: {blocker} is a reg"):
        load_tool("convert").main(["--framework", "mmseg", "--arch", "resnet18", "--source",
                                   "random:0", "--out", str(blocker / "m.pth")])
    with pytest.raises(SystemExit, match=f"--out {tmp_path} is a folder"):
        load_tool("convert").main(["--framework", "mmseg", "--arch", "resnet18", "--source",
                                   "random:0", "--out", str(tmp_path)])


def test_convert_unknown_arch():
    with pytest.raises(SystemExit, match="unknown architecture 'resnet51'; expected one of"):
        load_tool("convert").main(["--framework", "mmseg", "--arch", "resnet51", "--source",
                                   "random:0", "--out", "/tmp/never_written.pth"])


# ---- tools/seg_train.py / seg_test.py arguments --------------------------------------------
SEG_CONFIG = "configs/segmentation/linear_convnext_small_voc12aug_40k.py"


@pytest.mark.mmseg
@pytest.mark.parametrize("extra, expected", [
    (["--total-batch", "0"], "--total-batch 0: expected an integer >= 1"),
    (["--total-batch", "-4"], "--total-batch -4: expected an integer >= 1"),
    (["--max-iters", "0"], "--max-iters 0: expected an integer >= 1"),
    (["--crop-size", "16"], "--crop-size 16: expected an integer >= 32"),
    (["--num-workers", "-1"], "--num-workers -1: expected an integer >= 0"),
    (["--cfg-options", "train_cfg.max_iter=5"],
     "--cfg-options train_cfg.max_iter: the config has no key 'max_iter' under train_cfg"),
    (["--cfg-options", "optim_wraper.optimizer.lr=0.1"],
     "the config has no key 'optim_wraper' under the top level"),
])
def test_seg_train_bad_arguments(extra, expected, tmp_path):
    pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")
    with pytest.raises(SystemExit) as info:
        load_tool("seg_train").main([SEG_CONFIG, "--backbone", str(tmp_path / "c.pth"),
                                     "--data-root", str(tmp_path), "--work-dir",
                                     str(tmp_path / "w"), *extra])
    assert expected in str(info.value)
    assert not (tmp_path / "w").exists()


@pytest.mark.mmseg
def test_seg_train_config_and_work_dir(tmp_path):
    pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")
    tool = load_tool("seg_train")
    with pytest.raises(SystemExit, match=f"config {tmp_path / 'absent.py'} does not exist"):
        tool.main([str(tmp_path / "absent.py"), "--backbone", "c.pth"])
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match=f"--work-dir {blocker / 'w'}: {blocker} is a regular"):
        tool.main([SEG_CONFIG, "--backbone", "c.pth", "--data-root", str(tmp_path),
                   "--work-dir", str(blocker / "w")])
    with pytest.raises(SystemExit, match="--crop-size 8: expected an integer >= 32"):
        load_tool("seg_test").main([SEG_CONFIG, "c.pth", "--crop-size", "8"])
