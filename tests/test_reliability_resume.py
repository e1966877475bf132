"""Resuming a pretraining run (docs/reliability.md, "Checkpoints"): a resume whose settings
would change the run is refused naming each changed key, one that changes only how the run is
kept (log interval, workers, where it stops) goes on and names them, and nothing in the run
folder changes before every check has passed."""
import shutil
from pathlib import Path

import pytest
import torch

from bad_inputs import snapshot
from pretrain.checkpoint import atomic_save
from pretrain.config import load_config

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml"
TINY = ["data.num_images=32", "optim.batch_size=8", "optim.epochs=2", "optim.warmup_epochs=0",
        "model.mlp=64-64", "model.maps_mlp=32-32", "run.log_every_steps=1",
        "run.checkpoint_every_steps=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run stopped after 2 of its 8 steps (optim.max_steps=2), with all its files."""
    from pretrain.engine import train

    run = tmp_path_factory.mktemp("trained") / "run"
    train(load_config(SMOKE, TINY + ["optim.max_steps=2", f"run.output_dir={run}"]))
    return run


def resume(trained: Path, tmp_path: Path, *overrides: str):
    """A copy of the trained run, and the config resuming it with ``overrides``."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run, load_config(SMOKE, TINY + ["optim.max_steps=2", *overrides,
                                           f"run.output_dir={run}"])


REFUSED = {
    "batch_size": (["optim.batch_size=4"], ["optim.batch_size: 8 -> 4"]),
    "schedule_and_loss": (["optim.epochs=3", "loss.alpha=0.5"],
                          ["optim.epochs: 2 -> 3", "loss.alpha: 0.75 -> 0.5"]),
    "seed_crops_optimizer": (["run.seed=1", "data.size_crops=[96,32]", "optim.optimizer=lars"],
                             ["run.seed: 0 -> 1", "data.size_crops: [96, 64] -> [96, 32]",
                              "optim.optimizer: 'adamw' -> 'lars'"]),
}


@pytest.mark.slow  # a real (tiny) pretraining run first, as the two below
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_resume_that_would_change_the_run_is_refused_naming_each_key(case, trained,
                                                                       tmp_path):
    """A different batch size went on silently, and rewrote config.json."""
    from pretrain.engine import train

    overrides, named = REFUSED[case]
    run, cfg = resume(trained, tmp_path, *overrides)
    before = snapshot(run)
    with pytest.raises(ValueError) as info:
        train(cfg)
    message = str(info.value)
    assert f"{run / 'checkpoint.pth'} was trained with other settings" in message
    for change in named:
        assert change in message, (change, message)
    assert snapshot(run) == before, "a refused resume must not change the run folder"


@pytest.mark.slow
def test_a_resume_refused_by_the_strict_load_changes_nothing_either(trained, tmp_path):
    """The checkpoint's weights no longer fit (a tensor missing): refused after the model is
    built, and config.json (which a changed log interval would rewrite) is kept as it was."""
    from pretrain.engine import train

    run, cfg = resume(trained, tmp_path, "run.log_every_steps=2")
    state = torch.load(run / "checkpoint.pth", weights_only=True)
    state["model"].pop(next(iter(state["model"])))
    atomic_save(state, run / "checkpoint.pth")
    before = snapshot(run)
    with pytest.raises(ValueError, match="does not fit VICRegL"):
        train(cfg)
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_resume_that_changes_only_how_the_run_is_kept_goes_on_and_names_it(trained, tmp_path,
                                                                            capsys):
    from pretrain.engine import train

    run, cfg = resume(trained, tmp_path, "run.log_every_steps=2", "data.max_corrupt=5",
                      "optim.max_steps=4")
    train(cfg)
    out = capsys.readouterr().out
    assert "resuming" in out and "with changed settings that do not change the run" in out
    for change in ("run.log_every_steps: 1 -> 2", "data.max_corrupt: 100 -> 5",
                   "optim.max_steps: 2 -> 4"):
        assert change in out, change
    assert torch.load(run / "checkpoint.pth", weights_only=True)["step"] == 4
    assert '"log_every_steps": 2' in (run / "config.json").read_text()


def test_config_changes_splits_what_changes_the_run():
    from pretrain.checkpoint import config_changes

    saved = load_config(SMOKE, TINY)
    refused, allowed = config_changes(saved, load_config(SMOKE, TINY + [
        "optim.batch_size=16", "run.precision=bf16", "model.arch=resnet18",
        "run.output_dir=elsewhere", "data.num_workers=4", "run.checkpoint_every_steps=5"]))
    assert [c.split(":")[0] for c in refused] == ["model.arch", "optim.batch_size",
                                                  "run.precision"]
    assert [c.split(":")[0] for c in allowed] == ["data.num_workers",
                                                  "run.checkpoint_every_steps",
                                                  "run.output_dir"]
