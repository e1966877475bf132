"""tools/run_suite.py with a fake experiment command: rows, resume after a failure and after
an interruption (Ctrl-C and SIGKILL of the runner), stale rows, parallel jobs, SLURM through
submitit's local executor, seeds, optional extras (missing_extra, VICREGL_HIDE_EXTRAS), the
new evaluation tasks' commands, and the suite file's checks."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from transfer.suite.plan import make_plan, select
from transfer.suite.spec import SuiteError, load_suite

ROOT = Path(__file__).resolve().parent.parent

# The fake experiment: counts its runs, fails while a marker file exists, waits while another
# exists (so a test can interrupt it), scores 10 + len(backbone) % 7 (+ 5 for exp_b, + seed^2)
# unless control/scores.json gives its row a score, then writes a metrics.json in the format of
# transfer/metrics.py (by hand: importing it would import torch, seconds per call here).
FAKE = textwrap.dedent('''
    import argparse, json, os, sys, time
    from pathlib import Path
    p = argparse.ArgumentParser()
    for a in ("--out", "--backbone", "--experiment", "--control", "--tag", "--seed",
              "--total-batch"):
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
    if (control / "scores.json").exists():  # the score a test chose for the rows it names
        score = json.loads((control / "scores.json").read_text()).get(row, score)
    score += 0.0 if a.seed is None else float(a.seed) ** 2  # seeds 0, 1, 2 -> +0, +1, +4
    record = {"task": "semantic_segmentation", "dataset": "fake", "protocol": "fake",
              "config": "none", "backbone": {"arch": "resnet18", "source": a.backbone},
              "metrics": {"mIoU": score, "mAcc": score + 1, "per_class": {"a": 1.0}},
              "cost": {"wall_s": 0.5, "gpus": 0, "gpu_type": "cpu", "gpu_hours": 0.0},
              "git_sha": "test", "finished_at": "2026-01-01T00:00:00+00:00"}
    if a.total_batch:  # a fingerprint as the real tools write it: total batch vs protocol 16
        record["settings"] = {"total_batch": int(a.total_batch), "seed": a.seed}
        record["reference_settings"] = {"total_batch": 16}
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


@pytest.mark.slow
def test_rows_failure_retry_alone_and_resume(tmp_path):
    suite, work = write_suite(tmp_path), tmp_path / "work"
    (tmp_path / "control" / "fail.exp_b").touch()
    (tmp_path / "control" / "scores.json").write_text('{"weights.pth.exp_a": 42.25}')
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
    metrics = {r["id"]: r["metrics"] for r in results["rows"]}
    # the score chosen above, and 10 + len("random:0") % 7 = 11; the fake's mAcc is mIoU + 1;
    # per_class stays in metrics.json, out of results.json
    assert metrics["bb_file/exp_a"] == {"mIoU": 42.25, "mAcc": 43.25}
    assert metrics["bb_random/exp_a"] == {"mIoU": 11.0, "mAcc": 12.0}
    row = next(r for r in results["rows"] if r["id"] == "bb_file/exp_a")
    assert row["metrics_path"] == str(work / "runs" / "bb_file" / "exp_a" / "metrics.json")
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
@pytest.mark.slow
def test_interrupted_suite_resumes_without_redoing_rows(tmp_path, how):
    suite, work = write_suite(tmp_path), tmp_path / "work"
    hold = tmp_path / "control" / "hold.exp_b"
    hold.touch()
    runner = subprocess.Popen([sys.executable, str(ROOT / "tools" / "run_suite.py"), str(suite),
                               "--work-dir", str(work), "--no-tables"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    status = work / "runs" / "bb_random" / "exp_b" / "suite_status.json"
    # until the runner has recorded its step's pid (written just after the process starts;
    # a kill before that leaves a step no second runner can tell from a dead one)
    _wait_for(lambda: len(calls(tmp_path)) == 2 and status.is_file()
              and json.loads(status.read_text()).get("pid") is not None)
    fake_pid = int((tmp_path / "control" / "calls.txt").read_text().split()[-1])
    assert json.loads(status.read_text())["pid"] == fake_pid
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


@pytest.mark.slow
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


def test_moving_a_row_aside_twice_within_one_second_keeps_both(tmp_path):
    """The folder name has a one-second stamp: a second move used to fail onto the first
    (`Directory not empty`), seen when a stale row was redone twice quickly."""
    import types

    from transfer.suite.scheduler import move_aside

    step = types.SimpleNamespace(folder=tmp_path / "exp_a")
    for content in ("first", "second"):
        step.folder.mkdir()
        (step.folder / "metrics.json").write_text(content)
        move_aside(step, "stale")
    moved = sorted(tmp_path.glob("exp_a.stale-*"))
    assert [(m / "metrics.json").read_text() for m in moved] == ["first", "second"]


@pytest.mark.slow
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


@pytest.mark.slow
def test_missing_backbone_file_blocks_its_rows(tmp_path):
    suite = write_suite(tmp_path, extra_backbone='bb_missing: {arch: resnet18, source: '
                                                  '"{weights}/absent.pth"}')
    out = run_suite(suite, "--work-dir", tmp_path / "work", "--only", "bb_missing/*",
                    "--no-tables", check=1).stdout
    assert f"blocked  bb_missing/exp_a: backbone file {tmp_path / 'absent.pth'} does not exist" in out
    assert calls(tmp_path) == []


@pytest.mark.slow
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


def test_slurm_pretraining_submits_itself_and_is_recorded_like_a_job(tmp_path, capsys):
    """The other SLURM path: tools/pretrain.py --slurm submits itself (a stand-in prints what
    it prints); its submission is recorded as a submitit job's is, and a failed one fails."""
    import types

    from transfer.suite.launch_slurm import SlurmLauncher
    from transfer.suite.options import RunOptions
    from transfer.suite.state import step_state
    from transfer.suite.status_file import read_status

    def pretraining(name: str, code: str):
        folder = tmp_path / name
        return types.SimpleNamespace(
            id=f"pretrain:{name}", kind="pretrain", folder=folder, log=folder / "suite.log",
            output=folder / "backbone.pth", source="", nodes=2, gpus=8,
            argv=[sys.executable, "-c", code, "--config", "c.yaml"])

    launcher = SlurmLauncher("s", RunOptions(launcher="slurm", partition="p", timeout_min=5))
    ok = pretraining("ok", "import sys; print('submitted job 4242', sys.argv[1:])")
    launcher.submit(ok)
    status = read_status(ok)
    assert status["state"] == "submitted" and status["job_id"] == "4242"
    assert status["command"] == ok.argv[1:] and status["gpus"] == 8
    assert ("['--config', 'c.yaml', '--slurm', '--nodes', '2', '--gpus-per-node', '8', "
            "'--timeout-min', '5', '--partition', 'p']") in ok.log.read_text()
    assert "submitted pretrain:ok as job 4242" in capsys.readouterr().out
    assert launcher.submitted == {}  # --wait waits for submitit jobs of this process only
    bad = pretraining("bad", "import sys; print('no partition'); sys.exit(2)")
    launcher.submit(bad)
    assert read_status(bad)["state"] == "failed" and read_status(bad)["returncode"] == 2
    assert step_state(bad) == ("failed", f"return code 2, log {bad.log}")
    assert f"FAILED   pretrain:bad: submission failed; log {bad.log}" in capsys.readouterr().out


def test_suite_file_errors_name_the_file_and_entry(tmp_path):
    good = write_suite(tmp_path).read_text()
    cases = {
        "unknown key": (good.replace("metric: mIoU\n", "metric: mIoU\n    colour: red\n", 1),
                        "experiments.exp_a: unknown key(s) colour"),
        "no metric": (good.replace("    metric: mIoU\n    metrics: [mAcc]\n", "", 1),
                      "experiments.exp_a needs 'metric'"),
        "bad task": (good.replace("task: command", "task: clasification", 1),
                     "experiments.exp_a.task must be one of"),
        "protocol": (good.replace("metric: mIoU\n", "metric: mIoU\n    protocol: knn\n", 1),
                     "experiments.exp_a.protocol: only classification experiments"),
        "seeds": (good.replace("metric: mIoU\n", "metric: mIoU\n    seeds: 0\n", 1),
                  "experiments.exp_a.seeds must be an integer >= 1"),
        "both": (good.replace('source: "random:0",', 'source: "random:0", pretrain: {config: x},'),
                 "backbones.bb_random needs exactly one of 'source'"),
        "placeholder": (good.replace("{control}", "{controll}", 1), "unknown placeholder(s) {controll}"),
        # a suite file of the former convert step: experiments now take the source itself
        "retired": (good.replace('"--backbone", "{source}"', '"--checkpoint", "{checkpoint}"', 1),
                    "experiments.exp_a: {checkpoint} in '{checkpoint}': the converted mmseg "
                    "checkpoint of the former 'convert' step is gone: experiments are given "
                    "their backbone's source (tools/seg_train.py --backbone {source})"),
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
    assert len(r50.rows) == 6 * 5
    cls = r50.get("official_r50_alpha0.75/in1k_linear")
    assert cls.argv[1:] == ["tools/cls_eval.py", "--arch", "resnet50", "--backbone",
                            str(tmp_path / "resnet50_alpha0.75.pth"), "--data-root",
                            str(tmp_path / "d"), "--work-dir",
                            str(tmp_path / "w/runs/official_r50_alpha0.75/in1k_linear"),
                            "--protocol", "linear"]
    assert cls.needs == [] and cls.spawn == "torchrun"
    seg = r50.get("official_r50_alpha0.75/voc12aug_linear")
    assert seg.argv[1:5] == ["tools/seg_train.py",
                             "configs/segmentation/linear_resnet50_voc12aug_40k.py", "--backbone",
                             str(tmp_path / "resnet50_alpha0.75.pth")]  # the source itself
    assert seg.needs == [] and "--launcher" in seg.argv
    assert {s.kind for s in r50.steps} == {"pretrain", "experiment"}  # no conversion step
    from transfer.suite.processes import launch_argv

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
    assert chosen == ["pretrain:ours_r50_alpha0.9", "ours_r50_alpha0.9/voc12aug_linear"]
    # --gpus 0 runs on the CPU
    cpu = make_plan(load_suite(ROOT / "configs/suites/vicregl_resnet50.yaml"), tmp_path / "w",
                    tmp_path / "d", gpus=0)
    assert cpu.get("random_r50/voc0712_faster_rcnn_c4").argv[-2:] == ["MODEL.DEVICE", "cpu"]
    convnext = make_plan(load_suite(ROOT / "configs/suites/vicregl_convnext.yaml"),
                         tmp_path / "w", tmp_path / "d")
    assert len(convnext.rows) == 7 * 4
    assert "configs/segmentation/upernet_convnext_base_ade20k_160k.py" in convnext.get(
        "official_convnext_base_alpha0.75/ade20k_upernet").argv


# ---- seeds ------------------------------------------------------------------------------

def write_seeded_suite(tmp: Path) -> Path:
    write_suite(tmp)
    suite = tmp / "seeded.yaml"
    suite.write_text(textwrap.dedent(f'''
        name: seeded_suite
        variables: {{control: {tmp / "control"}}}
        backbones:
          bb_random: {{arch: resnet18, source: "random:0", label: random R18}}
        experiments:
          seeded:
            task: command
            command: ["{{python}}", "{tmp / "fake.py"}", "--out", "{{row_dir}}",
                      "--backbone", "{{source}}", "--experiment", "{{experiment}}",
                      "--control", "{{control}}", "--seed", "{{seed}}", "--total-batch", "8"]
            metric: mIoU
            metrics: [mAcc]
            seeds: 3
            gpus: 0
    '''))
    return suite


@pytest.mark.slow
@pytest.mark.multiprocess
def test_seeded_row_runs_each_seed_and_reports_mean_std_n(tmp_path):
    suite, work = write_seeded_suite(tmp_path), tmp_path / "work"
    plan = make_plan(load_suite(suite), work, tmp_path / "d")
    assert [s.id for s in plan.rows] == [f"bb_random/seeded/seed{k}" for k in range(3)]
    assert [s.folder for s in plan.rows] == [work / "runs/bb_random/seeded" / f"seed{k}"
                                             for k in range(3)]
    assert plan.rows[1].argv[-4:] == ["--seed", "1", "--total-batch", "8"]
    # a row id selects all its seeds
    assert [s.id for s in select(plan, ["bb_random/seeded"])] == [s.id for s in plan.rows]

    run_suite(suite, "--work-dir", work, check=0)
    assert calls(tmp_path) == ["random:0.seeded"] * 3
    row, = json.loads((work / "results.json").read_text())["rows"]
    # the fake scores 10 + len("random:0") % 7 + seed^2 = 11, 12, 15 (by hand: mean 38/3,
    # sample std sqrt(((11-38/3)^2 + (12-38/3)^2 + (15-38/3)^2) / 2) = sqrt(13/3))
    assert [s["metrics"]["mIoU"] for s in row["seeds"]] == [11.0, 12.0, 15.0]
    assert [s["seed"] for s in row["seeds"]] == [0, 1, 2]
    assert row["id"] == "bb_random/seeded" and row["status"] == "finished"
    assert row["n_seeds"] == 3 and row["seeds_planned"] == 3
    assert row["metrics"]["mIoU"] == pytest.approx(38 / 3)
    assert row["metrics_std"]["mIoU"] == pytest.approx((13 / 3) ** 0.5)
    assert row["metrics"]["mAcc"] == pytest.approx(38 / 3 + 1)
    assert row["cost"]["wall_s"] == pytest.approx(1.5)  # 3 x 0.5 s, added up
    md = (work / "table" / "table.md").read_text()
    assert "| random R18 | 12.7 ± 2.1 (n=3)† |" in md
    assert "- † seeded, every row: total batch 8 (protocol 16)" in md  # one note per column
    assert (work / "table" / "plot.png").is_file() and (work / "table" / "table.png").is_file()

    # one seed failing: the row shows the failure, the mean of the seeds that finished, n=2/3
    shutil.rmtree(work / "runs/bb_random/seeded/seed2")
    (tmp_path / "control" / "fail.seeded").touch()
    run_suite(suite, "--work-dir", work, check=1)
    row, = json.loads((work / "results.json").read_text())["rows"]
    assert row["status"] == "failed" and row["reason"].startswith("seed2: return code 3")
    assert row["reason"].endswith("2 of 3 seeds finished") and row["n_seeds"] == 2
    assert row["metrics"]["mIoU"] == pytest.approx(11.5)
    assert "| random R18 | 11.5 ± 0.7 (n=2/3)† |" in (work / "table" / "table.md").read_text()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_grouped_seeds_run_in_one_process_of_the_real_tool(tmp_path):
    """--group-seeds: the 3 seeds of a k-NN row run as one tools/cls_eval.py --seeds process
    (the same pid in every seed's status), each seed gets its own metrics.json and state, a
    seed deleted afterwards is the only one run again, and the rerun's process has only it."""
    from transfer.synthetic.image_folder import write_image_folder

    write_image_folder(tmp_path / "data" / "imagenet", 24, 32, seed=0, num_val=12)
    suite = tmp_path / "knn.yaml"
    suite.write_text(textwrap.dedent('''
        name: grouped
        backbones:
          rnd: {arch: convnext_mini, source: "random:0", label: random}
        experiments:
          knn:
            task: classification
            protocol: knn
            metric: top1
            seeds: 3
            gpus: 0
            options: [--image-size, "32", --resize, "32", --batch-size, "12", --workers, "0",
                      --memory-fraction, "0.5", --k, "5"]
    '''))
    work = tmp_path / "work"
    # --jobs 2 as the demo: the loop must not meet the seeds it already gave to the group
    args = (suite, "--work-dir", work, "--data-root", tmp_path / "data", "--group-seeds",
            "--jobs", "2")
    out = run_suite(*args, check=0, timeout=300).stdout
    assert "rnd/knn/seed{0,1,2} in one process" in out
    statuses = [json.loads((work / f"runs/rnd/knn/seed{k}/suite_status.json").read_text())
                for k in range(3)]
    assert len({s["pid"] for s in statuses}) == 1
    assert " ".join(statuses[0]["argv"]).endswith("--k 5 --seeds 0 1 2")
    assert [s["state"] for s in statuses] == ["finished"] * 3
    row, = json.loads((work / "results.json").read_text())["rows"]
    assert row["status"] == "finished" and row["n_seeds"] == 3
    assert [s["seed"] for s in row["seeds"]] == [0, 1, 2]

    shutil.rmtree(work / "runs/rnd/knn/seed1")
    again = run_suite(*args, check=0, timeout=300).stdout
    assert "done     rnd/knn/seed0" in again and "done     rnd/knn/seed2" in again
    assert "finished rnd/knn/seed1 in " in again and "in one process" not in again
    status = json.loads((work / "runs/rnd/knn/seed1/suite_status.json").read_text())
    argv = " ".join(status["argv"])  # a lone seed runs as its own step
    assert " --seed 1 " in argv and "--seeds" not in argv


# ---- optional extras ----------------------------------------------------------------------

def write_detection_suite(tmp: Path) -> Path:
    """A command row and a detection row (a real detectron2 config)."""
    suite = write_suite(tmp)
    det = ("experiments:\n  det:\n    task: detection\n    config: configs/detection/"
           "faster_rcnn_resnet50_c4_voc0712_24k.yaml\n    metric: bbox_AP\n    gpus: 0\n")
    suite.write_text(suite.read_text().replace("experiments:\n", det, 1))
    return suite


@pytest.mark.slow
@pytest.mark.multiprocess
def test_hidden_extra_is_missing_extra_and_exit_zero(tmp_path):
    """VICREGL_HIDE_EXTRAS=detectron2: on every machine, the missing-extra path."""
    suite, work = write_detection_suite(tmp_path), tmp_path / "work"
    env = dict(os.environ, VICREGL_HIDE_EXTRAS="detectron2")
    proc = subprocess.run([sys.executable, str(ROOT / "tools/run_suite.py"), str(suite),
                           "--work-dir", str(work), "--only", "bb_random/*"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    why = "detectron2 is hidden by VICREGL_HIDE_EXTRAS=detectron2 (optional extra: bash " \
          "tools/install_detectron2.sh (docs/detection.md))"
    assert f"missing_extra bb_random/det: {why}" in proc.stdout
    assert f"missing_extra: bb_random/det: {why}" in proc.stdout  # the summary
    assert "1 missing_extra" in proc.stdout and "not a failure (exit status 0)" in proc.stdout
    rows = {r["id"]: r for r in json.loads((work / "results.json").read_text())["rows"]}
    assert rows["bb_random/det"]["status"] == "missing_extra"
    assert rows["bb_random/det"]["reason"] == why
    assert rows["bb_random/exp_a"]["status"] == "finished"
    md = (work / "table" / "table.md").read_text()
    assert "| random R18 | missing_extra | 11.0 | 16.0 |" in md  # the main comparison
    assert f"| random R18 | det | bbox_AP | - | - | - | - | missing_extra: {why} |" in md
    assert "missing_extra" in (work / "table" / "table.csv").read_text()
    assert "missing\\_extra" in (work / "table" / "table.tex").read_text()
    # --collect-only sees it too, without a runner
    proc = subprocess.run([sys.executable, str(ROOT / "tools/run_suite.py"), str(suite),
                           "--work-dir", str(work), "--collect-only", "--no-tables"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {r["id"]: r for r in json.loads((work / "results.json").read_text())["rows"]}
    assert rows["bb_random/det"]["status"] == "missing_extra"
    # something else failing still fails the suite
    (tmp_path / "control" / "fail.exp_b").touch()
    proc = subprocess.run([sys.executable, str(ROOT / "tools/run_suite.py"), str(suite),
                           "--work-dir", str(work), "--only", "bb_file/*", "--no-tables"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "failed: bb_file/exp_b" in proc.stdout, proc.stdout


@pytest.mark.multiprocess
@pytest.mark.slow
def test_hidden_extra_is_refused_by_the_tools(tmp_path):
    env = dict(os.environ, VICREGL_HIDE_EXTRAS="detectron2")
    proc = subprocess.run([sys.executable, str(ROOT / "tools/det_train.py"), "--help"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == ("tools/det_train.py needs detectron2: detectron2 is hidden by "
                           "VICREGL_HIDE_EXTRAS=detectron2 (optional extra: bash "
                           "tools/install_detectron2.sh (docs/detection.md))\n")
    code = ("import _bootstrap, importlib.util; from transfer import extras; "
            "print(extras.available('detectron2'), extras.available('yaml'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "tools", env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "True"], proc.stderr


def test_extras_available_honours_the_variable(monkeypatch):
    from transfer import extras

    monkeypatch.delenv(extras.HIDE_ENV, raising=False)
    assert extras.available("yaml") and not extras.hide_requested()
    assert not extras.available("no_such_package_here")
    assert extras.missing_reason("detectron2") in ("", "detectron2 is not installed (optional "
                                                   "extra: bash tools/install_detectron2.sh "
                                                   "(docs/detection.md))")
    monkeypatch.setenv(extras.HIDE_ENV, " yaml , detectron2")
    assert extras.hidden() == {"yaml", "detectron2"} and extras.hide_requested()
    assert not extras.available("yaml")
    finder = extras.HiddenExtraFinder({"some_hidden_pkg"})
    with pytest.raises(ModuleNotFoundError, match="some_hidden_pkg is hidden by "
                                                  "VICREGL_HIDE_EXTRAS"):
        finder.find_spec("some_hidden_pkg.sub")
    assert finder.find_spec("yaml") is None


@pytest.mark.parametrize("installed",
                         [pytest.param(True, marks=pytest.mark.multiprocess), False])
def test_runner_with_a_fake_framework_check(tmp_path, monkeypatch, capsys, installed):
    """The detection row with detectron2 reported present (it runs: here the fake stands in
    for det_train) and absent (missing_extra, exit 0), in-process, on any machine."""
    from transfer import extras
    from transfer.suite.runner import RunOptions, SuiteRunner
    from transfer.suite.state import framework_missing

    suite, work = write_detection_suite(tmp_path), tmp_path / "work"
    real = extras.available
    monkeypatch.setattr(extras, "available",
                        lambda name: installed if name == "detectron2" else real(name))
    monkeypatch.delenv(extras.HIDE_ENV, raising=False)
    plan = make_plan(load_suite(suite), work, tmp_path / "d", python=sys.executable)
    step = plan.get("bb_random/det")
    assert step.argv[1:3] == ["tools/det_train.py", "--num-gpus"]
    expected = ("", "") if installed else (
        "missing_extra", "detectron2 is not installed (optional extra: bash "
                         "tools/install_detectron2.sh (docs/detection.md))")
    assert framework_missing(step) == expected
    fake = plan.get("bb_random/exp_a").argv
    step.argv = [a.replace("exp_a", "det") for a in fake]  # det_train itself is not tested here
    code = SuiteRunner(plan, [step], RunOptions(heartbeat_s=60)).run()
    out = capsys.readouterr().out
    assert code == 0, out
    row = next(r for r in json.loads((work / "results.json").read_text())["rows"]
               if r["id"] == "bb_random/det")
    if installed:
        assert calls(tmp_path) == ["random:0.det"] and row["status"] == "finished"
    else:
        assert calls(tmp_path) == [] and row["status"] == "missing_extra"
        assert "1 missing_extra" in out


# ---- the evaluation tasks -----------------------------------------------------------------

def test_classification_and_dense_retrieval_commands(tmp_path):
    suite = tmp_path / "evals.yaml"
    suite.write_text(textwrap.dedent('''
        name: evals
        backbones:
          vicregl: {arch: convnext_small, source: "random:3"}
        experiments:
          knn: {task: classification, metric: top1, gpus: 0, options: [--dataset, imagenet]}
          linear: {task: classification, protocol: linear, metric: top1, gpus: 4, seeds: 2}
          dense_nn:
            task: dense_retrieval
            config: configs/segmentation/linear_{arch}_voc12aug_40k.py
            metric: mIoU
            gpus: 0
            seeds: 3
            options: [--memory-fraction, "0.1"]
    '''))
    plan = make_plan(load_suite(suite), tmp_path / "w", tmp_path / "d", python="py")
    runs, data = tmp_path / "w/runs/vicregl", str(tmp_path / "d")
    assert [s.id for s in plan.steps] == [
        "vicregl/knn", "vicregl/linear/seed0", "vicregl/linear/seed1",
        "vicregl/dense_nn/seed0", "vicregl/dense_nn/seed1", "vicregl/dense_nn/seed2"]
    common = ["--arch", "convnext_small", "--backbone", "random:3", "--data-root", data,
              "--work-dir"]
    assert plan.get("vicregl/knn").argv == ["py", "tools/cls_eval.py", *common,
                                            str(runs / "knn"), "--protocol", "knn",
                                            "--dataset", "imagenet"]
    linear = plan.get("vicregl/linear/seed1")
    assert linear.argv == ["py", "tools/cls_eval.py", *common, str(runs / "linear/seed1"),
                           "--seed", "1", "--protocol", "linear"]
    assert linear.gpus == 4 and linear.spawn == "torchrun" and linear.needs == []
    dense = plan.get("vicregl/dense_nn/seed2")
    assert dense.argv == ["py", "tools/dense_nn_eval.py",
                          "configs/segmentation/linear_convnext_small_voc12aug_40k.py", *common,
                          str(runs / "dense_nn/seed2"), "--seed", "2", "--memory-fraction", "0.1"]
    assert dense.spawn == "none" and dense.output == runs / "dense_nn/seed2/metrics.json"
    bad = suite.read_text().replace("protocol: linear", "protocol: svm")
    (tmp_path / "bad.yaml").write_text(bad)
    with pytest.raises(SuiteError, match="experiments.linear.protocol must be one of knn, linear"):
        load_suite(tmp_path / "bad.yaml")


def test_seeded_segmentation_and_detection_commands(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent('''
        name: s
        backbones:
          r: {arch: resnet50, source: "random:0"}
        experiments:
          seg: {task: segmentation, config: "configs/segmentation/linear_{arch}_voc12aug_40k.py",
                metric: mIoU, gpus: 0, seeds: 2}
          det: {task: detection, config: "configs/detection/faster_rcnn_{arch}_c4_voc0712_24k.yaml",
                metric: bbox_AP, gpus: 0, seeds: 2, options: [SOLVER.MAX_ITER, "10"]}
    '''))
    plan = make_plan(load_suite(suite), tmp_path / "w", tmp_path / "d", python="py")
    seg = plan.get("r/seg/seed1")
    assert seg.argv[-4:] == [str(tmp_path / "w/runs/r/seg/seed1"), "--resume", "--seed", "1"]
    assert seg.argv[2:6] == ["configs/segmentation/linear_resnet50_voc12aug_40k.py",
                             "--backbone", "random:0", "--data-root"]
    assert seg.needs == []
    det = plan.get("r/det/seed1")
    assert det.argv[-8:] == ["OUTPUT_DIR", str(tmp_path / "w/runs/r/det/seed1"), "SEED", "1",
                             "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "10"]
