"""tools/run_suite.py with a fake experiment command: rows, resume after a failure and after
an interruption (Ctrl-C and SIGKILL of the runner), stale rows, parallel jobs, SLURM through
submitit's local executor, and the suite file's checks."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from transfer.suite import SuiteError, load_suite, make_plan, select

ROOT = Path(__file__).resolve().parent.parent

# The fake experiment: counts its runs, fails while a marker file exists, waits while another
# exists (so a test can interrupt it), then writes a metrics.json in the format of
# transfer/metrics.py (by hand: importing it would import torch, seconds per call here).
FAKE = textwrap.dedent('''
    import argparse, json, os, sys, time
    from pathlib import Path
    p = argparse.ArgumentParser()
    for a in ("--out", "--backbone", "--experiment", "--control", "--tag"):
        p.add_argument(a)
    a = p.parse_args()
    control = Path(a.control)
    row = a.backbone.split("/")[-1] + "." + a.experiment
    with open(control / "calls.txt", "a") as f:
        f.write(row + " " + str(os.getpid()) + "\\n")
    print("fake experiment", row, "threads", os.environ.get("OMP_NUM_THREADS"), flush=True)
    if (control / f"fail.{a.experiment}").exists():
        sys.exit(3)
    while (control / f"hold.{a.experiment}").exists():
        time.sleep(0.1)
    score = 10.0 + len(a.backbone) % 7 + (5.0 if a.experiment == "exp_b" else 0.0)
    record = {"task": "semantic_segmentation", "dataset": "fake", "protocol": "fake",
              "config": "none", "backbone": {"arch": "resnet18", "source": a.backbone},
              "metrics": {"mIoU": score, "mAcc": score + 1, "per_class": {"a": 1.0}},
              "cost": {"wall_s": 0.5, "gpus": 0, "gpu_type": "cpu", "gpu_hours": 0.0},
              "git_sha": "test", "finished_at": "2026-01-01T00:00:00+00:00"}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "metrics.json").write_text(json.dumps(record))
''')


def write_suite(tmp: Path, extra_backbone: str = "") -> Path:
    (tmp / "control").mkdir(exist_ok=True)
    (tmp / "fake.py").write_text(FAKE)
    (tmp / "weights.pth").write_bytes(b"pretend weights")
    suite = tmp / "suite.yaml"
    suite.write_text(textwrap.dedent(f'''
        name: fake_suite
        variables: {{control: {tmp / "control"}, weights: {tmp}, tag: a}}
        backbones:
          bb_random: {{arch: resnet18, source: "random:0", label: random R18}}
          bb_file:
            arch: resnet18
            source: "{{weights}}/weights.pth"
            paper: resnet50_alpha0.75
          {extra_backbone}
        experiments:
          exp_a:
            task: command
            command: ["{{python}}", "{tmp / "fake.py"}", "--out", "{{row_dir}}",
                      "--backbone", "{{source}}", "--experiment", "{{experiment}}",
                      "--control", "{{control}}", "--tag", "{{tag}}"]
            metric: mIoU
            metrics: [mAcc]
            paper: voc12aug_linear
            gpus: 0
          exp_b:
            task: command
            command: ["{{python}}", "{tmp / "fake.py"}", "--out", "{{row_dir}}",
                      "--backbone", "{{source}}", "--experiment", "{{experiment}}",
                      "--control", "{{control}}"]
            metric: mIoU
            gpus: 0
    '''))
    return suite


def run_suite(*args, check=None, timeout=120):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "run_suite.py"), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def calls(tmp: Path) -> list[str]:
    path = tmp / "control" / "calls.txt"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def test_rows_failure_retry_alone_and_resume(tmp_path):
    suite, work = write_suite(tmp_path), tmp_path / "work"
    (tmp_path / "control" / "fail.exp_b").touch()
    out = run_suite(suite, "--work-dir", work, "--heartbeat", "1", check=1).stdout
    assert sorted(calls(tmp_path)) == sorted(["random:0.exp_a", "random:0.exp_b",
                                              "weights.pth.exp_a", "weights.pth.exp_b"])
    # the failure names its log and the command that retries it alone
    log = work / "runs" / "bb_file" / "exp_b" / "suite.log"
    assert f"failed: bb_file/exp_b: return code 3, log {log}" in out
    assert "retry alone: python tools/run_suite.py" in out and "--only 'bb_file/exp_b'" in out
    assert "fake experiment weights.pth.exp_b" in log.read_text()
    results = json.loads((work / "results.json").read_text())
    states = {r["id"]: r["status"] for r in results["rows"]}
    assert states == {"bb_random/exp_a": "finished", "bb_random/exp_b": "failed",
                      "bb_file/exp_a": "finished", "bb_file/exp_b": "failed"}
    row = next(r for r in results["rows"] if r["id"] == "bb_file/exp_a")
    assert row["metrics"] == {"mIoU": row["metrics"]["mIoU"], "mAcc": row["metrics"]["mIoU"] + 1}
    assert row["cost"]["gpus"] == 0 and row["cost"]["gpu_type"] == "cpu"

    # retry one failed row alone: nothing else runs
    (tmp_path / "control" / "fail.exp_b").unlink()
    run_suite(suite, "--work-dir", work, "--only", "bb_file/exp_b", check=0)
    assert calls(tmp_path)[4:] == ["weights.pth.exp_b"]
    # then the whole suite: only the remaining failed row runs; finished rows are skipped
    out = run_suite(suite, "--work-dir", work, check=0).stdout
    assert calls(tmp_path)[5:] == ["random:0.exp_b"]
    assert "done     bb_random/exp_a" in out and "4 finished" in out
    assert (work / "table" / "table.md").is_file() and (work / "table" / "table.png").is_file()
    # --rerun moves a finished row aside and runs it again
    run_suite(suite, "--work-dir", work, "--rerun", "bb_random/exp_a", check=0)
    assert calls(tmp_path)[6:] == ["random:0.exp_a"]
    assert len(list((work / "runs" / "bb_random").glob("exp_a.rerun-*"))) == 1


def _wait_for(predicate, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_interrupted_suite_resumes_without_redoing_rows(tmp_path, how):
    suite, work = write_suite(tmp_path), tmp_path / "work"
    hold = tmp_path / "control" / "hold.exp_b"
    hold.touch()
    runner = subprocess.Popen([sys.executable, str(ROOT / "tools" / "run_suite.py"), str(suite),
                               "--work-dir", str(work), "--no-tables"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    status = work / "runs" / "bb_random" / "exp_b" / "suite_status.json"
    _wait_for(lambda: len(calls(tmp_path)) == 2 and status.is_file())
    fake_pid = int((tmp_path / "control" / "calls.txt").read_text().split()[-1])
    assert calls(tmp_path) == ["random:0.exp_a", "random:0.exp_b"]
    runner.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    out = runner.communicate(timeout=60)[0]
    if how == "sigterm":
        # the runner stops its step (the whole process group) and records it
        assert runner.returncode == 130, out
        assert "run the same command again to resume" in out
        assert json.loads(status.read_text())["state"] == "interrupted"
        _wait_for(lambda: not os.path.exists(f"/proc/{fake_pid}"), 20)
    else:
        assert json.loads(status.read_text())["state"] == "running"  # nobody could update it
        # its orphaned step still runs: a second runner leaves it alone
        out = run_suite(suite, "--work-dir", work, "--only", "bb_random/exp_b", "--no-tables",
                        check=0).stdout
        assert f"running  bb_random/exp_b: process {fake_pid} on this machine" in out
        os.kill(fake_pid, signal.SIGKILL)  # a SIGKILLed runner cannot stop its child
        _wait_for(lambda: not os.path.exists(f"/proc/{fake_pid}") or
                  open(f"/proc/{fake_pid}/stat").read().split()[2] == "Z", 20)
    hold.unlink()
    out = run_suite(suite, "--work-dir", work, "--no-tables", check=0).stdout
    assert "done     bb_random/exp_a" in out  # the finished row is not redone
    assert calls(tmp_path)[2:] == ["random:0.exp_b", "weights.pth.exp_a", "weights.pth.exp_b"]


def test_stale_row_runs_again_when_the_backbone_file_changes(tmp_path):
    suite, work = write_suite(tmp_path), tmp_path / "work"
    run_suite(suite, "--work-dir", work, "--only", "bb_file/*", "--no-tables", check=0)
    assert calls(tmp_path) == ["weights.pth.exp_a", "weights.pth.exp_b"]
    (tmp_path / "weights.pth").write_bytes(b"new pretraining, other weights")
    out = run_suite(suite, "--work-dir", work, "--only", "bb_file/exp_a", "--dry-run", check=0)
    assert "bb_file/exp_a  [stale:" in out.stdout
    out = run_suite(suite, "--work-dir", work, "--only", "bb_file/exp_a", "--no-tables", check=0)
    assert calls(tmp_path)[2:] == ["weights.pth.exp_a"]
    assert len(list((work / "runs" / "bb_file").glob("exp_a.stale-*"))) == 1
    # a changed command (here a suite variable) makes a finished row stale too
    out = run_suite(suite, "--work-dir", work, "--only", "bb_file/exp_a", "--set", "tag=b",
                    "--no-tables", check=0).stdout
    assert "bb_file/exp_a: stale (its command changed since it ran" in out
    assert calls(tmp_path)[3:] == ["weights.pth.exp_a"]
    assert len(list((work / "runs" / "bb_file").glob("exp_a.stale-*"))) == 2


def test_parallel_jobs_share_the_cores(tmp_path):
    suite, work = write_suite(tmp_path), tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "run_suite.py"), str(suite),
                           "--work-dir", str(work), "--jobs", "2", "--no-tables"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(calls(tmp_path)) == sorted(["random:0.exp_a", "random:0.exp_b",
                                              "weights.pth.exp_a", "weights.pth.exp_b"])
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    log = (work / "runs" / "bb_file" / "exp_a" / "suite.log").read_text()
    assert f"threads {threads}" in log


def test_missing_backbone_file_blocks_its_rows(tmp_path):
    suite = write_suite(tmp_path, extra_backbone='bb_missing: {arch: resnet18, source: '
                                                  '"{weights}/absent.pth"}')
    out = run_suite(suite, "--work-dir", tmp_path / "work", "--only", "bb_missing/*",
                    "--no-tables", check=1).stdout
    assert f"blocked  bb_missing/exp_a: backbone file {tmp_path / 'absent.pth'} does not exist" in out
    assert calls(tmp_path) == []


def test_slurm_launcher_through_submitit(tmp_path):
    """submitit's local executor stands in for sbatch: the same submission code path."""
    pytest.importorskip("submitit")
    suite, work = write_suite(tmp_path), tmp_path / "work"
    out = run_suite(suite, "--work-dir", work, "--launcher", "slurm", "--slurm-cluster", "local",
                    "--wait", "--only", "bb_random/*", "--no-tables", check=0).stdout
    assert "submitted bb_random/exp_a as job" in out and "4 finished" not in out
    status = json.loads((work / "runs" / "bb_random" / "exp_a" / "suite_status.json").read_text())
    assert status["state"] == "finished" and status["job_id"]
    results = json.loads((work / "results.json").read_text())
    assert {r["status"] for r in results["rows"] if r["backbone"] == "bb_random"} == {"finished"}


def test_suite_file_errors_name_the_file_and_entry(tmp_path):
    good = write_suite(tmp_path).read_text()
    cases = {
        "unknown key": (good.replace("metric: mIoU\n", "metric: mIoU\n    colour: red\n", 1),
                        "experiments.exp_a: unknown key(s) colour"),
        "no metric": (good.replace("    metric: mIoU\n    metrics: [mAcc]\n", "", 1),
                      "experiments.exp_a needs 'metric'"),
        "bad task": (good.replace("task: command", "task: classification", 1),
                     "experiments.exp_a.task must be one of"),
        "both": (good.replace('source: "random:0",', 'source: "random:0", pretrain: {config: x},'),
                 "backbones.bb_random needs exactly one of 'source'"),
        "placeholder": (good.replace("{control}", "{controll}", 1), "unknown placeholder(s) {controll}"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        path.write_text(text)
        with pytest.raises(SuiteError, match=None) as info:
            make_plan(load_suite(path), tmp_path / "w", tmp_path / "d")
        assert str(path) in str(info.value) and message in str(info.value), (name, info.value)
    with pytest.raises(SuiteError, match="has no variable 'checkpoint'"):
        load_suite(tmp_path / "suite.yaml", {"checkpoint": "/x"})
    with pytest.raises(SuiteError, match="does not exist"):
        load_suite(tmp_path / "absent.yaml")


def test_paper_suites_expand_to_the_real_commands(tmp_path):
    r50 = make_plan(load_suite(ROOT / "configs/suites/vicregl_resnet50.yaml",
                               {"checkpoints": str(tmp_path)}), tmp_path / "w", tmp_path / "d")
    assert len(r50.rows) == 6 * 4
    seg = r50.get("official_r50_alpha0.75/voc12aug_linear")
    assert seg.argv[1:4] == ["tools/seg_train.py",
                             "configs/segmentation/linear_resnet50_voc12aug_40k.py", "--checkpoint"]
    assert seg.needs == ["convert:official_r50_alpha0.75"] and "--launcher" in seg.argv
    from transfer.suite_runner import launch_argv

    assert launch_argv(seg)[1:5] == ["-m", "torch.distributed.run", "--standalone",
                                     "--nproc_per_node=8"]
    det = r50.get("ours_r50_alpha0.75/coco_mask_rcnn_fpn_1x")
    assert det.argv[1:4] == ["tools/det_train.py", "--num-gpus", "8"]
    assert launch_argv(det) == det.argv  # detectron2 starts its own processes
    assert str(tmp_path / "w/pretrain/ours_r50_alpha0.75/backbone.pth") in det.argv
    assert det.needs == ["pretrain:ours_r50_alpha0.75"]
    assert r50.get("official_r50_alpha0.9/voc12aug_linear").source == str(
        tmp_path / "resnet50_alpha0.9.pth")
    # --only pulls in what the chosen rows need
    chosen = [s.id for s in select(r50, ["ours_r50_alpha0.9/voc12aug_linear"])]
    assert chosen == ["pretrain:ours_r50_alpha0.9", "convert:ours_r50_alpha0.9",
                      "ours_r50_alpha0.9/voc12aug_linear"]
    # --gpus 0 runs on the CPU
    cpu = make_plan(load_suite(ROOT / "configs/suites/vicregl_resnet50.yaml"), tmp_path / "w",
                    tmp_path / "d", gpus=0)
    assert cpu.get("random_r50/voc0712_faster_rcnn_c4").argv[-2:] == ["MODEL.DEVICE", "cpu"]
    convnext = make_plan(load_suite(ROOT / "configs/suites/vicregl_convnext.yaml"),
                         tmp_path / "w", tmp_path / "d")
    assert len(convnext.rows) == 7 * 3
    assert "configs/segmentation/upernet_convnext_base_ade20k_160k.py" in convnext.get(
        "official_convnext_base_alpha0.75/ade20k_upernet").argv
