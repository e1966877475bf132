"""One way in for a backbone: the transfer tools take the same ``--backbone SOURCE``, defined
once (``pretrain.common.arguments.add_backbone_arg``). The same sources parse to the same value, a
malformed one is the same usage error (exit 2), every tool shows the same help, and the option
is required wherever a tool has no other weights (det_train may evaluate or resume a detector
of its own)."""
import argparse
import re
from pathlib import Path

import pytest

from conftest import load_tool
from pretrain.common.arguments import add_backbone_arg
from transfer.extras import missing_reason

ROOT = Path(__file__).resolve().parent.parent
SEG_CONFIG = "configs/segmentation/linear_convnext_small_voc12aug_40k.py"
DET_CONFIG = "configs/detection/mask_rcnn_resnet50_fpn_1x_coco.yaml"
# each tool: its other required arguments, the module its parser needs, whether --backbone
# is required
TOOLS = {
    "seg_train": ([SEG_CONFIG], "mmseg.models", True),
    "det_train": (["--config-file", DET_CONFIG], "detectron2", False),
    "dense_nn_eval": ([SEG_CONFIG, "--arch", "resnet50", "--work-dir", "w"], "mmseg.models",
                      True),
    "cls_eval": (["--arch", "resnet50", "--work-dir", "w"], None, True),
    "recalibrate_bn": (["--arch", "resnet50", "--out", "o.pth"], None, True),
}
MARKS = {"mmseg.models": [pytest.mark.mmseg], "detectron2": [pytest.mark.detectron2], None: []}
TOOL_PARAMS = [pytest.param(tool, marks=MARKS[needs]) for tool, (_, needs, _) in TOOLS.items()]
SOURCES = ["runs/vicregl_resnet50/backbone.pth", "runs/vicregl_resnet50/checkpoint.pth",
           "downloads/resnet50_alpha0.75.pth", "downloads/resnet50-0676ba61.pth", "random",
           "random:7"]


def parse(tool: str, argv: list[str]) -> argparse.Namespace:
    """``argv`` after the tool's other required arguments, through the tool's own parser."""
    other, needs, _ = TOOLS[tool]
    if needs == "detectron2":
        pytest.importorskip(needs, reason=missing_reason(needs) or "detectron2 does not import")
    elif needs:
        pytest.importorskip(needs, reason="needs the MMSegmentation environment")
    module = load_tool(tool)
    if tool == "det_train":  # detectron2's default_argument_parser, extended
        return module.build_parser().parse_args([*other, *argv])
    return module.parse_args([*other, *argv])


def test_no_tool_defines_its_own():
    for tool in TOOLS:
        text = (ROOT / "tools" / f"{tool}.py").read_text()
        assert "add_backbone_arg(" in text, tool
        assert not re.search(r"add_argument\(\s*\"--backbone\"", text), tool


@pytest.mark.parametrize("tool", TOOL_PARAMS)
def test_the_same_sources_parse_to_the_same_value(tool):
    for source in SOURCES:
        assert parse(tool, ["--backbone", source]).backbone == source


@pytest.mark.parametrize("tool", TOOL_PARAMS)
def test_the_same_help_and_the_same_usage_errors(tool, capsys):
    reference = argparse.ArgumentParser()
    add_backbone_arg(reference)
    help_text = next(a.help for a in reference._actions if "--backbone" in a.option_strings)
    with pytest.raises(SystemExit) as info:
        parse(tool, ["--help"])
    assert info.value.code == 0
    shown = capsys.readouterr().out
    # the same words; argparse wraps them by the column its longest option leaves
    assert "".join(help_text.split()) in "".join(shown.split())
    assert "--backbone SOURCE" in shown

    with pytest.raises(SystemExit) as info:
        parse(tool, ["--backbone", "random:abc"])
    assert info.value.code == 2
    assert ("argument --backbone: backbone source 'random:abc': expected 'random' or "
            "'random:SEED'") in capsys.readouterr().err

    if TOOLS[tool][2]:
        with pytest.raises(SystemExit) as info:
            parse(tool, [])
        assert info.value.code == 2
        assert "required: --backbone" in capsys.readouterr().err
    else:
        assert parse(tool, []).backbone is None
