"""The pretraining entry points: help, the shipped recipes, config merging, SLURM requeue
wiring."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.builder import build_augmentation, build_model
from pretrain.config import check_pretrain_config, load_config
from pretrain.model import LOSS_KEYS

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "configs/pretrain").glob("*.yaml"))


def undocumented_arguments(help_text: str) -> list[str]:
    """The arguments of an argparse ``--help`` listed without a description: each argument
    line starts with two spaces; its description follows on the line or, indented deeper,
    on the next one."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line in ("positional arguments:", "options:"))
    missing = []
    for i, line in enumerate(lines[start:], start):
        match = re.match(r"^  (\S+(?: \S+)*)(\s{2,}\S.*)?$", line)
        if match and not match.group(2):
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if not following.startswith("   "):
                missing.append(match.group(1))
    return missing


@pytest.mark.parametrize("tool", ["pretrain", "export_backbone"])
@pytest.mark.slow
def test_help_explains(tool):
    """--help shows examples that work as written (the recipes and run folders they name
    exist, their overrides are real keys) and describes every argument."""
    out = subprocess.run([sys.executable, str(ROOT / "tools" / f"{tool}.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    examples = out.split("Example", 1)[1].split("positional arguments:", 1)[0]
    commands = [line for line in examples.splitlines() if "tools/" in line or "--" in line]
    assert commands, "no example command in --help"
    recipes = re.findall(r"configs/pretrain/\S+\.yaml", examples)
    recipes += [f"configs/pretrain/{name}.yaml" for name in re.findall(r"runs/([^/\s]+)/", examples)]
    assert recipes, "the examples name no recipe"
    assert all((ROOT / r).is_file() for r in recipes), recipes
    overrides = re.findall(r"\b(?:model|loss|data|optim|run)\.\w+=\S+", examples)
    load_config(RECIPES[0], overrides)  # unknown keys or wrong types would raise
    assert undocumented_arguments(out) == []
    if tool == "pretrain":  # what a run writes, and the SLURM options
        for name in ("checkpoint.pth", "backbone.pth", "metrics.jsonl", "--slurm"):
            assert name in out, name


@pytest.mark.parametrize("recipe", [
    pytest.param(r, marks=pytest.mark.slow) if "in1k" in r.stem else r for r in RECIPES],
    ids=[r.stem for r in RECIPES])
def test_every_recipe_loads_and_builds(recipe):
    """Each shipped recipe passes the checks, builds its model (heads of the recipe's widths)
    and its augmentation, and a forward pass with the loss runs on its views of one image
    (the in1k recipes' full-size models take seconds each: slow tier)."""
    cfg = load_config(recipe)
    assert cfg["recipe"] == recipe.stem
    assert cfg["run"]["output_dir"] == f"runs/{recipe.stem}"
    assert recipe.read_text().startswith("#"), "each recipe starts with a header comment"
    check_pretrain_config(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=4)
    for head, key in (("projector", "mlp"), ("maps_projector", "maps_mlp")):
        widths = [m.out_features for m in getattr(model, head) if isinstance(m, torch.nn.Linear)]
        assert widths == [int(w) for w in cfg["model"][key].split("-")], head
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 200, 3), np.uint8))
    views, locations = build_augmentation(cfg)(image, torch.Generator().manual_seed(0))
    d = cfg["data"]
    assert [v.shape[-1] for v in views] == [s for s, n in zip(d["size_crops"], d["num_crops"])
                                            for _ in range(n)]
    assert [g.shape[0] for g in locations] == [model.backbone.feature_size(v.shape[-1])
                                               for v in views]
    with torch.no_grad():  # a batch of two: the same views, flipped for the second sample
        loss, logs = model([torch.stack([v, v.flip(-1)]) for v in views],
                           [torch.stack([g, g]) for g in locations], torch.tensor([0, 1]))
    assert torch.isfinite(loss) and set(LOSS_KEYS) | {"probe_ce"} <= set(logs)


def test_overrides_are_typed():
    cfg = load_config(RECIPES[0], ["optim.epochs=7", "loss.l2_all_matches=true",
                                   "data.size_crops=[160, 64]"])
    assert cfg["optim"]["epochs"] == 7 and cfg["loss"]["l2_all_matches"] is True
    assert cfg["data"]["size_crops"] == [160, 64]


def test_slurm_trainer_requeues_itself():
    submitit = pytest.importorskip("submitit")
    from pretrain.engine import train
    from pretrain.common.slurm import Requeueable

    trainer = Requeueable(train, {"run": {}}, "/data")
    resubmission = trainer.checkpoint()
    assert isinstance(resubmission, submitit.helpers.DelayedSubmission)
    assert isinstance(resubmission.function, Requeueable)
    assert resubmission.function.fn is train and resubmission.function.args == ({"run": {}}, "/data")
