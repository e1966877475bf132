"""The training step without a per-step host sync: the non-finite-loss guard, the engine
reading it every N steps (never saving after a bad step), and the benchmark tool."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain.config import load_config
from pretrain.step import FiniteLossGuard, NonFiniteLossError
from pretrain.weight_files import load_state_file

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml"


def test_guard_names_the_first_bad_step_and_its_terms():
    guard = FiniteLossGuard(torch.device("cpu"))
    logs = {"global_inv": torch.tensor(1.0), "local_cov": torch.tensor(2.0)}
    guard.record(0, torch.tensor(3.0), logs)
    guard.check()  # all finite: nothing raised
    guard.record(1, torch.tensor(float("nan")), {**logs, "local_cov": torch.tensor(float("inf"))})
    guard.record(2, torch.tensor(float("inf")), logs)  # later bad steps do not overwrite
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 1, terms "
                                                 r"\{'global_inv': 1.0, 'local_cov': inf\}"):
        guard.check()


def test_engine_checks_every_n_steps_and_never_saves_after_a_bad_step(tmp_path, poison_loss_at_call):
    from pretrain import engine

    poison_loss_at_call(5)
    torch.set_num_threads(1)
    cfg = load_config(SMOKE, [
        "data.num_images=64", "optim.batch_size=8", "optim.epochs=2", "optim.warmup_epochs=1",
        "run.check_finite_every_steps=20", "run.log_every_steps=10",
        "run.checkpoint_every_steps=3", "optim.fused=true", f"run.output_dir={tmp_path / 'r'}"])
    with pytest.raises(engine.NonFiniteLossError, match="non-finite loss .* at step 4"):
        engine.train(cfg)
    # the bad step (4) was applied (no sync before it), but the check before the step-6
    # checkpoint stopped the run: the step-3 checkpoint stays, finite
    kept = load_state_file(tmp_path / "r" / "checkpoint.pth")
    assert kept["step"] == 3
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_engine_rejects_a_bad_check_interval(tmp_path):
    from pretrain import engine

    cfg = load_config(SMOKE, ["run.check_finite_every_steps=0", f"run.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="check_finite_every_steps"):
        engine.train(cfg)


@pytest.mark.slow
def test_benchmark_tool_reports_every_part(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "tools/benchmark_pretrain.py"), "--config", str(SMOKE),
           "--batch", "4", "--warmup", "1", "--steps", "2", "--workers", "0",
           "--loader-batches", "1", "--jpeg-images", "6", "--jpeg-size", "160x120",
           "--jpeg-root", str(tmp_path / "jpeg"), "--ablations", "--ablation-steps", "1",
           "--json", str(out), "data.size_crops=[64,32]", "data.pipeline=fast",
           "optim.fused=true", "run.check_finite_every_steps=20"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| setting | variant |" in result.stdout and "step/ceiling" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    main = rows[0]
    for key in ("ceiling_img_s", "step_img_s", "ratio", "loss_ms", "optimizer_ms",
                "loader_pil_img_s", "loader_fast_img_s", "e2e_img_s", "e2e_ratio"):
        assert main[key] > 0, key
    assert main["share_backbone"] + main["share_loss"] + main["share_optimizer"] \
        + main["share_heads_rest"] == pytest.approx(1.0)
    assert main["peak_gib"] is None  # no CUDA: reported as n/a, not invented
    assert {r["variant"] for r in rows[1:]} >= {"optimiser unfused", "loss read every step"}
