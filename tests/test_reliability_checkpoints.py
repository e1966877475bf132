"""Bad checkpoints at every entry point (docs/reliability.md, "Checkpoints").

Each bad file (truncated, zero bytes, random bytes, another architecture, a pickle whose
``__reduce__`` would create a file) must stop the tool with an error naming the file and what
was expected; the payload never runs; the good files already in the folder are unchanged.
"""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from bad_inputs import KINDS, payload_is_live, snapshot, write_bad, write_bad_pkl
from pretrain.checkpoint import atomic_save, export_backbone
from pretrain.weight_files import TRAIN_FORMAT
from pretrain.config import load_config
from conftest import load_tool  # noqa: E402
from transfer import extras  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml"
TINY = ["data.num_images=32", "optim.batch_size=8", "optim.epochs=1", "optim.warmup_epochs=0",
        "model.mlp=64-64", "model.maps_mlp=32-32"]



def train_checkpoint(arch: str) -> dict:
    """A real training checkpoint of the tiny recipe for ``arch`` (step 0, no training)."""
    from pretrain.builder import build_model
    from pretrain.checkpoint import rng_state
    from pretrain.optim import build_optimizer

    cfg = load_config(SMOKE, TINY + [f"model.arch={arch}", "model.fuse_views=false"])
    model = build_model(cfg, num_classes=None)
    optimizer = build_optimizer(model, "adamw", 0.05)
    return {"format": TRAIN_FORMAT, "arch": arch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scaler": {}, "step": 0, "epoch": 0,
            "rng": [rng_state()], "config": cfg, "git_sha": "test",
            "sampler": {"seed": 0, "batch_size": 8, "world_size": 1, "drop_last": False}}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """Good files: training checkpoints (convnext_mini, resnet18) and their exports."""
    folder = tmp_path_factory.mktemp("good")
    files = {}
    for arch in ("convnext_mini", "resnet18"):
        files[f"train_{arch}"] = atomic_save(train_checkpoint(arch), folder / f"{arch}_ckpt.pth")
        export_backbone(torch.load(files[f"train_{arch}"], weights_only=True),
                        folder / f"{arch}_backbone.pth", "test")
        files[f"export_{arch}"] = folder / f"{arch}_backbone.pth"
    return files


def bad_file(kind: str, good: dict, folder: Path, name: str, marker: Path) -> Path:
    """``kind`` in KINDS, or "other_arch": a good resnet18 file where convnext_mini is expected."""
    if kind == "other_arch":
        out = folder / name
        out.write_bytes(good["train_resnet18"].read_bytes())
        return out
    return write_bad(kind, good["train_convnext_mini"], folder / name, marker)


def test_the_payload_is_live(tmp_path):
    assert payload_is_live(tmp_path), "plain pickle must run the payload, or the tests prove nothing"


# ---- pretraining resume ------------------------------------------------------------------
EXPECTED_RESUME = {"truncated": "cannot be read as a weights-only torch checkpoint",
                   "zero_bytes": "cannot be read as a weights-only torch checkpoint",
                   "random_bytes": "cannot be read as a weights-only torch checkpoint",
                   "payload": "cannot be read as a weights-only torch checkpoint",
                   "other_arch": "holds a resnet18 run but the recipe trains "
                                 "model.arch=convnext_mini"}


@pytest.mark.parametrize("kind", list(EXPECTED_RESUME))
def test_pretraining_resume_refuses_a_bad_checkpoint(kind, good, tmp_path):
    from pretrain.engine import train

    run, marker = tmp_path / "run", tmp_path / "payload_ran"
    run.mkdir()
    ckpt = bad_file(kind, good, run, "checkpoint.pth", marker)
    (run / "backbone.pth").write_bytes(good["export_convnext_mini"].read_bytes())
    before = snapshot(run)
    cfg = load_config(SMOKE, TINY + [f"run.output_dir={run}"])
    with pytest.raises(ValueError) as info:
        train(cfg)
    assert str(ckpt) in str(info.value) and EXPECTED_RESUME[kind] in str(info.value)
    assert not marker.exists(), "the pickle payload ran"
    assert snapshot(run) == before, "a failed resume must not change the run folder"


def test_pretraining_resume_refuses_a_relabelled_model(good, tmp_path):
    """Arch says convnext_mini but the tensors are resnet18's: the strict load names the file."""
    from pretrain.engine import train

    run = tmp_path / "run"
    state = torch.load(good["train_resnet18"], weights_only=True)
    state["arch"] = state["config"]["model"]["arch"] = "convnext_mini"  # both labels
    atomic_save(state, run / "checkpoint.pth")
    before = (run / "checkpoint.pth").read_bytes()
    with pytest.raises(ValueError, match="does not fit VICRegL") as info:
        train(load_config(SMOKE, TINY + [f"run.output_dir={run}"]))
    assert f"checkpoint {run / 'checkpoint.pth'}" in str(info.value)
    assert (run / "checkpoint.pth").read_bytes() == before


# ---- tools/export_backbone.py ------------------------------------------------------------
@pytest.mark.parametrize("kind", [*KINDS, "export_not_train"])
def test_export_backbone_refuses_a_bad_checkpoint(kind, good, tmp_path):
    tool, marker = load_tool("export_backbone"), tmp_path / "payload_ran"
    if kind == "export_not_train":
        source = good["export_convnext_mini"]
        expected = "is not a training checkpoint of this suite"
    else:
        source = write_bad(kind, good["train_convnext_mini"], tmp_path / "ckpt.pth", marker)
        expected = "cannot be read as a weights-only torch checkpoint"
    out = tmp_path / "backbone.pth"
    out.write_bytes(good["export_convnext_mini"].read_bytes())  # a good previous export
    with pytest.raises(SystemExit) as info:
        tool.main([str(source), str(out)])
    assert str(source) in str(info.value) and expected in str(info.value)
    assert not marker.exists()
    assert out.read_bytes() == good["export_convnext_mini"].read_bytes()


# ---- tools/convert.py (both frameworks read through transfer.weights) -----------------------
@pytest.mark.parametrize("framework", ["mmseg", "detectron2"])
@pytest.mark.parametrize("kind", [*KINDS, "other_arch"])
def test_convert_refuses_a_bad_source(kind, framework, good, tmp_path):
    tool, marker = load_tool("convert"), tmp_path / "payload_ran"
    arch = "convnext_mini" if framework == "mmseg" else "resnet18"
    if kind == "other_arch":
        source = good["export_resnet18" if arch == "convnext_mini" else "export_convnext_mini"]
        other = "resnet18" if arch == "convnext_mini" else "convnext_mini"
        expected = f"holds a {other} backbone, not {arch}"
    else:
        source = write_bad(kind, good[f"export_{arch}"], tmp_path / "src.pth", marker)
        expected = "cannot be read as a weights-only torch checkpoint"
    out = tmp_path / "converted.out"
    out.write_bytes(b"a good previous conversion")
    with pytest.raises(SystemExit) as info:
        tool.main(["--framework", framework, "--arch", arch, "--source", str(source),
                   "--out", str(out)])
    assert str(source) in str(info.value) and expected in str(info.value)
    assert not marker.exists()
    assert out.read_bytes() == b"a good previous conversion"


# ---- detectron2: MODEL.WEIGHTS is checked before detectron2 unpickles it -------------------
@pytest.mark.parametrize("kind", ["payload_pkl", "truncated_pkl", "zero_bytes", "random_bytes",
                                  "payload"])
def test_detectron2_weights_are_checked_before_loading(kind, good, tmp_path):
    """tools/det_train.py calls check_weights_file on MODEL.WEIGHTS first (no detectron2
    needed here: the check works without it)."""
    from transfer.detectron2_side.conversion import check_weights_file, write_pkl

    marker = tmp_path / "payload_ran"
    if kind == "payload_pkl":
        path = write_bad_pkl(tmp_path / "weights.pkl", marker)
    elif kind == "truncated_pkl":
        import numpy as np

        full = write_pkl(tmp_path / "full.pkl", {"stem.conv1.weight": np.zeros((4, 3, 7, 7))})
        path = tmp_path / "weights.pkl"
        path.write_bytes(full.read_bytes()[:100])
    else:
        path = write_bad(kind, good["export_resnet18"], tmp_path / "weights.pth", marker)
    with pytest.raises(ValueError) as info:
        check_weights_file(str(path))
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.detectron2
def test_det_train_refuses_a_payload_pkl(tmp_path):
    pytest.importorskip("detectron2", reason=extras.missing_reason("detectron2"))
    tool = load_tool("det_train")
    marker = tmp_path / "payload_ran"
    pkl = write_bad_pkl(tmp_path / "weights.pkl", marker)
    args = tool.build_parser().parse_args([
        "--config-file", str(ROOT / "configs/detection/faster_rcnn_resnet50_c4_voc0712_24k.yaml"),
        "MODEL.WEIGHTS", str(pkl), "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.DEVICE", "cpu"])
    with pytest.raises(SystemExit, match=str(pkl)):
        tool.setup(args)
    assert not marker.exists()


# ---- tools/seg_train.py / tools/seg_test.py ----------------------------------------------
SEG_CONFIG = "configs/segmentation/linear_convnext_small_voc12aug_40k.py"
SEG_TINY = ["model.backbone.arch=convnext_mini", "model.decode_head.in_channels=[16,32,64,128]"]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    from transfer.synthetic.segmentation import write_voc12aug

    root = tmp_path_factory.mktemp("data")
    write_voc12aug(root, num_train=2, num_val=1, size=64, seed=0)
    return root


def seg_args(backbone, data_root, work, *extra):
    return [SEG_CONFIG, "--backbone", str(backbone), "--data-root", str(data_root),
            "--work-dir", str(work), "--max-iters", "2", "--crop-size", "64", "--num-workers",
            "0", *extra, "--cfg-options", *SEG_TINY]


@pytest.mark.mmseg
@pytest.mark.parametrize("kind", [*KINDS, "other_arch"])
def test_seg_train_refuses_a_bad_backbone(kind, good, voc_root, tmp_path):
    """--backbone is read strictly before anything is built; the work dir is not created."""
    pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")
    tool, marker = load_tool("seg_train"), tmp_path / "payload_ran"
    if kind == "other_arch":
        source = good["export_resnet18"]
        expected = "holds a resnet18 backbone, not convnext_mini"
    else:
        source = write_bad(kind, good["export_convnext_mini"], tmp_path / "backbone.pth", marker)
        expected = "cannot be read as a weights-only torch checkpoint"
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as info:
        tool.main(seg_args(source, voc_root, work))
    assert str(source) in str(info.value) and expected in str(info.value)
    assert not marker.exists() and not work.exists()


@pytest.mark.mmseg
@pytest.mark.parametrize("kind", KINDS)
def test_seg_train_resume_and_seg_test_refuse_a_bad_iteration_checkpoint(kind, good, voc_root,
                                                                          tmp_path):
    """The checkpoint --resume would pick (last_checkpoint) and the one seg_test evaluates,
    inside a seg_train work dir (where mmengine's globals are allow-listed): still refused."""
    pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")
    marker, work = tmp_path / "payload_ran", tmp_path / "work"
    backbone = good["export_convnext_mini"]
    bad = write_bad(kind, good["train_convnext_mini"], work / "iter_2.pth", marker)
    (work / "iter_1.pth").write_bytes(b"a good previous checkpoint (stand-in)")
    (work / "last_checkpoint").write_text(str(bad))
    (work / "seg_run.json").write_text("{}")
    before = snapshot(work)
    with pytest.raises(SystemExit) as info:
        load_tool("seg_train").main(seg_args(backbone, voc_root, work, "--resume"))
    assert str(bad) in str(info.value) and "cannot be read as an mmengine checkpoint" in str(
        info.value)
    with pytest.raises(SystemExit) as info:
        load_tool("seg_test").main([SEG_CONFIG, str(bad), "--data-root", str(voc_root),
                                    "--crop-size", "64", "--cfg-options", *SEG_TINY])
    assert str(bad) in str(info.value) and "cannot be read as an mmengine checkpoint" in str(
        info.value)
    assert not marker.exists()
    assert snapshot(work) == before


@pytest.mark.parametrize("kind", KINDS)
def test_trained_checkpoint_check_refuses_bad_files_even_in_a_trusted_dir(kind, good, tmp_path):
    """The check seg_test and seg_train --resume run first (needs mmengine, not mmcv): a
    seg_train work dir allow-lists mmengine's globals, never the payload's ``open``."""
    pytest.importorskip("mmengine", reason="needs the MMSegmentation environment")
    import numpy as np

    from transfer.mmseg_side.runner import RUN_MARKER, check_trained_checkpoint

    marker, work = tmp_path / "payload_ran", tmp_path / "work"
    work.mkdir()
    (work / RUN_MARKER).write_text("{}")
    fine = work / "iter_1.pth"  # numpy values as mmengine's message hub pickles them
    torch.save({"meta": {"iter": 1}, "state_dict": {"w": torch.ones(1)},
                "message_hub": {"loss": np.float64(0.5)}}, fine)
    assert check_trained_checkpoint(fine, work)["meta"] == {"iter": 1}
    bad = write_bad(kind, good["train_convnext_mini"], work / "iter_2.pth", marker)
    with pytest.raises(ValueError) as info:
        check_trained_checkpoint(bad, work)
    assert str(bad) in str(info.value) and "cannot be read as an mmengine checkpoint" in str(
        info.value)
    assert not marker.exists()
    with pytest.raises(ValueError, match="expected an mmengine checkpoint"):
        check_trained_checkpoint(good["export_convnext_mini"], None)
