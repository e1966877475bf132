"""A suite step's state has one owner, transfer/suite/state.py::step_state, and one order of
priority (its docstring): finished > the runner's verdict > stale > the last attempt (queued,
running, failed, interrupted) > a missing framework > pending. These tests pin that order on
steps built by hand on disk, and check that the runner's scheduler, results.json,
``run_suite.py --dry-run``, the demo's progress line and the summary all show what it decides.
In-process and without a framework: no tool is run."""
import json
import os
import socket
import sys
import textwrap

import pytest

from transfer import extras
from transfer.suite import state as state_module
from transfer.suite.plan import make_plan
from transfer.suite.spec import load_suite
from transfer.suite.state import attempt_end, step_state
from transfer.suite.status_file import fingerprint, write_status

METRICS = {"task": "semantic_segmentation", "dataset": "fake", "protocol": "fake",
           "config": "none", "backbone": {"arch": "resnet50"}, "metrics": {"mIoU": 1.0},
           "cost": {"wall_s": 0.5, "gpus": 0, "gpu_type": "cpu", "gpu_hours": 0.0}}


@pytest.fixture
def plan(tmp_path, monkeypatch):
    """A command row on a backbone file, a detection row (detectron2: an optional extra) and
    a dense retrieval row (MMSegmentation: required); both frameworks reported absent."""
    (tmp_path / "weights.pth").write_bytes(b"pretend weights")
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(f'''
        name: states
        variables: {{weights: {tmp_path}}}
        backbones:
          bb: {{arch: resnet50, source: "{{weights}}/weights.pth"}}
        experiments:
          cmd:
            task: command
            command: ["{{python}}", "fake.py", "--out", "{{row_dir}}"]
            metric: mIoU
            gpus: 0
          det:
            task: detection
            config: configs/detection/faster_rcnn_resnet50_c4_voc0712_24k.yaml
            metric: bbox_AP
            gpus: 0
          nn:
            task: dense_retrieval
            config: configs/segmentation/linear_resnet50_voc12aug_40k.py
            metric: mIoU
            gpus: 0
    '''))
    monkeypatch.delenv(extras.HIDE_ENV, raising=False)
    real = extras.available
    monkeypatch.setattr(extras, "available",
                        lambda name: False if name in ("detectron2", "mmseg") else real(name))
    return make_plan(load_suite(suite), tmp_path / "work", tmp_path / "data",
                     python=sys.executable)


def finish(step, **status):
    """The step's output and the record of the run that wrote it (``status`` overrides)."""
    step.folder.mkdir(parents=True, exist_ok=True)
    step.output.write_text(json.dumps(METRICS))
    write_status(step, **{"state": "finished", "returncode": 0,
                          "fingerprint": fingerprint(step.source),
                          "command": step.argv[1:], **status})


def record(step, **status):
    step.folder.mkdir(parents=True, exist_ok=True)
    write_status(step, **status)


def dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- 1. finished: an output wins ------------------------------------------------------------

def test_an_output_wins_over_a_failure_marker_and_a_verdict(plan):
    step = plan.get("bb/cmd")
    finish(step, state="failed", returncode=3)  # an attempt that exited 3 after its output
    assert step_state(step) == ("finished", "")
    assert step_state(step, {step.id: ("blocked", "needs x")}) == ("finished", "")


def test_an_unreadable_output_is_not_finished(plan):
    step = plan.get("bb/cmd")
    finish(step, state="failed", returncode=3, log="the.log")
    step.output.write_text("42")
    assert step_state(step) == ("failed", "return code 3, log the.log")


# ---- 2. the runner's verdict, before a stale output and the last attempt ---------------------

def test_a_verdict_comes_before_a_stale_output_and_a_recorded_failure(plan, tmp_path):
    stale, failed = plan.get("bb/cmd"), plan.get("bb/det")
    finish(stale)
    (tmp_path / "weights.pth").write_bytes(b"a new pretraining, other weights")
    record(failed, state="failed", returncode=1, log="l")
    verdicts = {stale.id: ("blocked", "needs pretrain:bb, which is failed"),
                failed.id: ("missing_extra", "detectron2 is not installed")}
    assert step_state(stale, verdicts) == verdicts[stale.id]
    assert step_state(failed, verdicts) == verdicts[failed.id]
    assert step_state(stale)[0] == "stale" and step_state(failed)[0] == "failed"


# ---- 3. stale -----------------------------------------------------------------------------

def test_stale_when_the_backbone_file_or_the_command_changed(plan, tmp_path):
    step = plan.get("bb/cmd")
    finish(step)
    (tmp_path / "weights.pth").write_bytes(b"a new pretraining, other weights")
    assert step_state(step) == ("stale", f"{step.source} changed since this step ran")
    finish(step, command=step.argv[1:] + ["--other"])
    assert step_state(step) == ("stale", "its command changed since it ran (suite file, "
                                         "--set, --gpus, data root)")


def test_a_stale_output_comes_before_a_recorded_failure(plan):
    step = plan.get("bb/cmd")
    finish(step, state="failed", returncode=1, command=["old"])
    assert step_state(step)[0] == "stale"


# ---- 4. the last attempt, before a missing framework -----------------------------------------

def test_the_last_attempt_comes_before_a_missing_framework(plan, monkeypatch):
    step = plan.get("bb/det")  # detectron2 reported absent
    assert step_state(step)[0] == "missing_extra"
    record(step, state="failed", returncode=1, log="l")
    assert step_state(step) == ("failed", "return code 1, log l")
    record(step, state="interrupted", returncode=-15)
    assert step_state(step) == ("interrupted", "return code -15, log l")
    record(step, state="running", host=socket.gethostname(), pid=os.getpid())
    assert step_state(step) == ("running", f"process {os.getpid()} on this machine is "
                                           "running it, log l")
    pid = dead_pid()
    record(step, pid=pid)  # its runner was killed, and its process is gone
    assert step_state(step) == ("interrupted", f"was running on {socket.gethostname()}, log l")
    record(step, state="running", host="another-host", pid=os.getpid())
    assert step_state(step)[0] == "interrupted"


def test_a_submitted_job_is_queued_until_it_leaves_the_queue(plan, monkeypatch):
    step = plan.get("bb/det")
    record(step, state="submitted", job_id="77")
    monkeypatch.setattr(state_module, "slurm_job_active", lambda job: None)
    assert step_state(step) == ("queued", "SLURM job 77 (squeue not available here: assumed "
                                          "still queued)")
    monkeypatch.setattr(state_module, "slurm_job_active", lambda job: True)
    assert step_state(step) == ("queued", "SLURM job 77")
    monkeypatch.setattr(state_module, "slurm_job_active", lambda job: False)
    assert step_state(step)[0] == "missing_extra"  # pending again: the framework decides
    monkeypatch.setattr(extras, "available", lambda name: True)
    assert step_state(step) == ("pending", "SLURM job 77 left the queue without a result")


# ---- 5. a missing framework, 6. pending ------------------------------------------------------

def test_a_missing_framework_then_pending(plan, monkeypatch):
    det, nn, cmd = plan.get("bb/det"), plan.get("bb/nn"), plan.get("bb/cmd")
    assert step_state(det) == ("missing_extra", extras.missing_reason("detectron2"))
    assert step_state(nn) == ("blocked", state_module.REQUIRED_HINTS["mmseg"])
    assert step_state(cmd) == ("pending", f"{cmd.output} not written yet")


# ---- when an attempt ends ---------------------------------------------------------------

def test_the_end_of_an_attempt_follows_the_same_rule(plan):
    step = plan.get("bb/cmd")
    step.folder.mkdir(parents=True)
    assert attempt_end(step, 3) == ("failed", "exit status 3")
    assert attempt_end(step, 0) == ("failed", f"{step.output} not written yet")
    assert attempt_end(step, None, error="OSError: gone") == ("failed", "OSError: gone")
    assert attempt_end(step, -15, stopping=True) == ("interrupted", None)
    step.output.write_text(json.dumps(METRICS))
    for ending in ((3,), (-15, True), (None, False, "OSError: gone")):
        assert attempt_end(step, *ending) == ("finished", None)  # an output wins


# ---- every reader asks the owner ----------------------------------------------------------

def test_the_runner_results_dry_run_and_progress_show_the_owners_state(plan, tmp_path,
                                                                        capsys):
    from conftest import load_tool
    from transfer.suite import report
    from transfer.suite.demo_progress import read_timing
    from transfer.suite.options import RunOptions
    from transfer.suite.results import collect
    from transfer.suite.scheduler import Scheduler

    cmd, det, nn = plan.get("bb/cmd"), plan.get("bb/det"), plan.get("bb/nn")
    finish(cmd, state="failed", returncode=2)
    record(nn, state="failed", returncode=1, log="l")
    scheduler = Scheduler(plan, RunOptions())
    for step in plan.steps:  # nn failed before: retried, but its framework is missing
        if scheduler.decide(step, busy=set()) == "start":
            raise AssertionError(f"{step.id} should not start")
    missing = ("missing_extra", extras.missing_reason("detectron2"))
    required = ("blocked", state_module.REQUIRED_HINTS["mmseg"])
    assert scheduler.verdicts == {det.id: missing, nn.id: required}
    expected = {s.id: step_state(s, scheduler.verdicts) for s in plan.steps}
    assert expected == {cmd.id: ("finished", ""), det.id: missing, nn.id: required}
    assert {s.id: scheduler.state(s) for s in plan.steps} == expected
    rows = {r["id"]: (r["status"], r["reason"]) for r in collect(plan, scheduler.verdicts)["rows"]}
    assert rows == expected
    on_disk = {r["id"]: r["status"] for r in collect(plan)["rows"]}
    assert on_disk == {cmd.id: "finished", det.id: "missing_extra", nn.id: "failed"}

    capsys.readouterr()
    load_tool("run_suite").print_plan(plan.steps, plan)
    shown = [line for line in capsys.readouterr().out.splitlines() if line.startswith("bb/")]
    assert shown == [f"{cmd.id}  [finished]", f"{det.id}  [missing_extra: "
                     f"{extras.missing_reason('detectron2')}]", f"{nn.id}  [failed: return "
                     "code 1, log l]"]
    assert [read_timing(s).state for s in plan.steps] == ["finished", "done", "done"]
    states = [(s, *scheduler.state(s)) for s in plan.steps]
    assert report.summary("states", states, tmp_path / "results.json", 1.0) == 1  # nn blocked
