"""The training engine: exact resume after SIGKILL, NaN handling, exports and logs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pretrain.config import load_config
from pretrain.weight_files import BACKBONE_FORMAT, TRAIN_FORMAT, load_state_file

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml"
# drop path on: the resumed run must also restore the RNG that draws its noise
COMMON = ["data.num_images=128", "optim.batch_size=16", "optim.epochs=2", "optim.warmup_epochs=1",
          "model.drop_path_rate=0.2", "run.checkpoint_every_steps=3", "run.log_every_steps=1"]


def run_pretrain(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "tools/pretrain.py"), "--config", str(SMOKE),
           "--output-dir", str(out), *COMMON, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    return output


@pytest.mark.slow
def test_sigkill_and_resume_reaches_the_same_weights(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    finish(run_pretrain(straight))

    proc = run_pretrain(killed)
    deadline = time.time() + 240
    while not (killed / "checkpoint.pth").exists():  # first checkpoint: step 3 of 16
        assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = load_state_file(killed / "checkpoint.pth")["step"]
    assert interrupted_at < 16, "the run finished before it could be killed"
    output = finish(run_pretrain(killed))
    assert f"resumed from {killed / 'checkpoint.pth'} at step {interrupted_at}" in output

    a, b = (load_state_file(d / "checkpoint.pth") for d in (straight, killed))
    assert a["format"] == b["format"] == TRAIN_FORMAT and a["step"] == b["step"] == 16
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), f"{key} differs after resume"
    for key in ("state", "param_groups"):
        assert str(a["optimizer"][key]) == str(b["optimizer"][key])
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "resumed run must not duplicate log records"


# 20 images, batch 8: epochs of 3 steps, the third of 4 images (the official loader's partial
# batch); a schedule of 2 * 20 // 8 = 5 steps (2 of warm-up) in a run of 6 (steps 0 to 5)
PARTIAL = ["data.num_images=20", "optim.batch_size=8", "optim.epochs=2", "optim.warmup_epochs=1",
           "model.mlp=64-64", "model.maps_mlp=32-32", "model.drop_path_rate=0.2",
           "run.checkpoint_every_steps=1", "run.log_every_steps=1", "run.export_backbone=false"]


@pytest.mark.slow
def test_resume_around_the_partial_last_step_is_exact(tmp_path):
    """A kill during the partial step leaves the checkpoint of step 2, a kill right after it
    the checkpoint of step 3 (written every step here); stopping there (optim.max_steps) and
    restarting is what the restart after such a kill does, deterministically."""
    from pretrain.engine import train
    from pretrain.run_logging import read_jsonl

    def run(out: Path, *extra: str) -> dict:
        train(load_config(SMOKE, PARTIAL + [f"run.output_dir={out}", *extra]))
        return load_state_file(out / "checkpoint.pth")

    straight = run(tmp_path / "straight")
    assert straight["step"] == 6 and straight["sampler"]["drop_last"] is False
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "straight" / "metrics.jsonl")]
    peak = 0.002 * 8 / 256
    assert lrs[:3] == [0.0, peak / 2, peak]  # warm-up of 20 // 8 = 2 steps
    assert lrs[-1] == pytest.approx(peak * 0.001)  # step 5: the schedule's end, in epoch 1
    for stop in (2, 3):
        out = tmp_path / f"stopped_at_{stop}"
        assert run(out, f"optim.max_steps={stop}")["step"] == stop
        resumed = run(out)
        assert resumed["step"] == 6
        for key, value in straight["model"].items():
            assert torch.equal(value, resumed["model"][key]), f"{key} differs, stopped at {stop}"
        for key in ("state", "param_groups"):
            assert str(straight["optimizer"][key]) == str(resumed["optimizer"][key])
        assert [r["lr"] for r in read_jsonl(out / "metrics.jsonl")] == lrs


@pytest.mark.slow
def test_outputs_of_a_run(tmp_path):
    out = tmp_path / "run"
    finish(run_pretrain(out, "optim.max_steps=4"))
    for name in ("checkpoint.pth", "backbone.pth", "metrics.jsonl", "loss.png", "config.json"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir())
    export = load_state_file(out / "backbone.pth")
    assert export["format"] == BACKBONE_FORMAT and export["arch"] == "convnext_mini"
    assert export["provenance"]["step"] == 4 and len(export["provenance"]["sha256"]) == 64
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "global_inv", "local_cov", "lr", "images_per_s"} <= set(records[-1])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, poison_loss_at_call):
    from pretrain import engine

    poison_loss_at_call(5)
    cfg = load_config(SMOKE, COMMON + [f"run.output_dir={tmp_path / 'nan'}"])
    with pytest.raises(engine.NonFiniteLossError, match="non-finite loss .* at step 4"):
        engine.train(cfg)
    kept = load_state_file(tmp_path / "nan" / "checkpoint.pth")
    assert kept["step"] == 3
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_unknown_config_key_is_an_error():
    with pytest.raises(KeyError, match="unknown config key 'optim.epoch'"):
        load_config(SMOKE, ["optim.epoch=3"])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_torchrun_two_processes_train_and_resume(tmp_path):
    """The torchrun path (gloo on the CPU): DDP, gathered variance/covariance, rank-0 files,
    every rank's RNG in the checkpoint, and resumption under the launcher."""
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(29500 + os.getpid() % 1000)]

    def launch(steps):
        cmd = torchrun + [str(ROOT / "tools/pretrain.py"), "--config", str(SMOKE), "--output-dir",
                          str(out), *COMMON, f"optim.max_steps={steps}", "model.arch=resnet18",
                          "model.fuse_views=false"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))

    first = launch(3)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    state = load_state_file(out / "checkpoint.pth")
    assert state["step"] == 3 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    second = launch(5)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout + second.stderr
    assert load_state_file(out / "checkpoint.pth")["step"] == 5
