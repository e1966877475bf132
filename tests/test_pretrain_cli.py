"""The pretraining entry points: help, config merging, SLURM requeue wiring."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.config import load_config
from conftest import load_tool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "configs/pretrain").glob("*.yaml"))



@pytest.mark.parametrize("tool", ["pretrain", "export_backbone"])
@pytest.mark.slow
def test_help_explains(tool):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / f"{tool}.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "Example" in out or "examples" in out.lower()


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_recipe_loads_and_builds(recipe):
    cfg = load_config(recipe)
    assert cfg["recipe"] == recipe.stem
    assert cfg["run"]["output_dir"] == f"runs/{recipe.stem}"
    assert recipe.read_text().startswith("#"), "each recipe starts with a header comment"
    from pretrain.backbones import ARCHS

    assert cfg["model"]["arch"] in ARCHS


def test_overrides_are_typed():
    cfg = load_config(RECIPES[0], ["optim.epochs=7", "loss.l2_all_matches=true",
                                   "data.size_crops=[160, 64]"])
    assert cfg["optim"]["epochs"] == 7 and cfg["loss"]["l2_all_matches"] is True
    assert cfg["data"]["size_crops"] == [160, 64]


def test_slurm_trainer_requeues_itself():
    submitit = pytest.importorskip("submitit")
    from pretrain.engine import train
    from pretrain.slurm import Requeueable

    trainer = Requeueable(train, {"run": {}}, "/data")
    resubmission = trainer.checkpoint()
    assert isinstance(resubmission, submitit.helpers.DelayedSubmission)
    assert isinstance(resubmission.function, Requeueable)
    assert resubmission.function.fn is train and resubmission.function.args == ({"run": {}}, "/data")
