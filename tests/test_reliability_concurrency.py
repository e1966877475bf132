"""Two processes in one folder (docs/reliability.md, "Two processes in one folder").

A second tools/pretrain.py on a run folder, or a second tools/run_suite.py on a work dir, must
exit at once naming the pid that holds the folder, and change nothing there. The holder here is
a plain process holding ``fcntl.flock`` on ``<folder>/.lock`` (the protocol of
pretrain/common/run_lock.py, written out), so the tests also pin the protocol down.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bad_inputs import snapshot
from conftest import load_tool
from pretrain.common.run_lock import FolderInUseError, folder_lock

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml"
TINY = ["data.num_images=32", "optim.batch_size=8", "optim.epochs=1", "optim.warmup_epochs=0",
        "model.mlp=64-64", "model.maps_mlp=32-32", "run.log_every_steps=1"]
HOLDER = """
import fcntl, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, f"{os.getpid()} {socket.gethostname()} holder.py\\n".encode())
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def hold():
    """``hold(folder)``: a process holding ``folder``'s lock until the test ends."""
    procs = []

    def start(folder: Path) -> subprocess.Popen:
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder / ".lock")],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_pretraining_in_a_folder_in_use_exits_naming_the_holder(hold, tmp_path):
    run = tmp_path / "run"
    holder = hold(run)
    before = snapshot(run)
    started = time.time()
    with pytest.raises(SystemExit) as info:
        load_tool("pretrain").main(["--config", str(SMOKE), "--output-dir", str(run),
                                    "optim.max_steps=1", *TINY])
    message = str(info.value.code)
    assert f"run.output_dir {run} is in use by pid {holder.pid} (holder.py)" in message
    assert f"lock file {run / '.lock'}" in message
    assert time.time() - started < 20, "the second run must stop at once"
    assert snapshot(run) == before, "the second run must not write in the folder"


def write_suite(tmp: Path) -> Path:
    """Two `command` rows that record their call in tmp/calls.txt and write metrics.json."""
    row = tmp / "row.py"
    row.write_text("import json, pathlib, sys, time\n"
                   "out, calls, hold = map(pathlib.Path, sys.argv[1:4])\n"
                   "with open(calls, 'a') as f: f.write(out.name + '\\n')\n"
                   "while hold.exists(): time.sleep(0.05)\n"
                   "(out / 'metrics.json').write_text(json.dumps(dict(task='t', dataset='d', "
                   "protocol='p', backbone={}, metrics={'top1': 1.0})))\n")
    command = (f'["{{python}}", "{row}", "{{row_dir}}", "{tmp / "calls.txt"}", '
               f'"{tmp / "hold"}"]')
    suite = tmp / "suite.yaml"
    suite.write_text("name: lock_suite\nbackbones:\n  bb: {arch: resnet18, source: 'random:0'}\n"
                     f"experiments:\n  exp_a: {{task: command, command: {command}, "
                     "metric: top1, gpus: 0}\n"
                     f"  exp_b: {{task: command, command: {command}, metric: top1, gpus: 0}}\n")
    return suite


def calls(tmp: Path) -> list[str]:
    path = tmp / "calls.txt"
    return path.read_text().split() if path.exists() else []


def test_a_second_suite_runner_on_a_work_dir_in_use_exits_naming_the_holder(hold, tmp_path):
    suite, work = write_suite(tmp_path), tmp_path / "work"
    holder = hold(work)
    tool = load_tool("run_suite")
    for extra in ([], ["--collect-only"]):
        with pytest.raises(SystemExit) as info:
            tool.main([str(suite), "--work-dir", str(work), "--no-tables", *extra])
        message = str(info.value.code)
        assert f"--work-dir {work} is in use by pid {holder.pid} (holder.py)" in message, extra
    assert calls(tmp_path) == [], "no row may run"
    assert sorted(p.name for p in work.iterdir()) == [".lock"], "nothing written"
    # a dry run only reads: it still shows the state beside a running suite
    assert tool.main([str(suite), "--work-dir", str(work), "--dry-run"]) == 0


def test_the_lock_is_held_once_removed_on_exit_and_freed_when_the_holder_is_killed(tmp_path):
    folder = tmp_path / "run"
    with folder_lock(folder, "run.output_dir") as lock:
        assert lock.read_text().split()[0] == str(os.getpid())
        with pytest.raises(FolderInUseError, match=f"in use by pid {os.getpid()}"):
            with folder_lock(folder, "run.output_dir"):
                pass
    assert not lock.exists(), "a clean exit removes the lock file"
    # a holder killed with SIGKILL frees the folder, even while a child it forked (as a
    # DataLoader worker) still runs
    code = ("import os, sys, time\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "from pretrain.common.run_lock import folder_lock\n"
            "with folder_lock(sys.argv[1], 'run.output_dir'):\n"
            "    child = os.fork()\n"
            "    if child == 0:\n"
            # one os.write per line: so small a pipe write is atomic, while print's text and
            # newline could interleave with the other process's line (seen: '12595forked')
            "        os.write(1, b'forked\\n')\n"  # after the at-fork hook has run
            "        time.sleep(600)\n"
            "        os._exit(0)\n"
            "    os.write(1, f'{child}\\n'.encode())\n"
            "    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE,
                            text=True)
    # both lines, in either order: the child must have run (and closed its copy of the lock)
    # before the holder is killed, or a busy machine that has not scheduled it yet would
    # leave the lock held by the child
    lines = [proc.stdout.readline().strip() for _ in range(2)]
    assert "forked" in lines, lines
    child = int(next(line for line in lines if line != "forked"))
    try:
        with pytest.raises(FolderInUseError) as info:
            with folder_lock(folder, "run.output_dir"):
                pass
        assert info.value.pid == proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with folder_lock(folder, "run.output_dir"):  # free at once, the child still alive
            os.kill(child, 0)
    finally:
        os.kill(child, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_pretrainings_started_together_train_once(tmp_path):
    """Two tools/pretrain.py on one folder at the same moment: one trains, the other exits
    naming it; each step is logged once (both used to train and log every step twice)."""
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "tools/pretrain.py"), "--config", str(SMOKE),
           "--output-dir", str(run), *TINY]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outputs
    winner, loser = (0, 1) if procs[0].returncode == 0 else (1, 0)
    assert f"is in use by pid {procs[winner].pid} (pretrain.py)" in outputs[loser], outputs[loser]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4], steps
    assert not (run / ".lock").exists()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_second_suite_runner_leaves_the_running_one_alone(tmp_path):
    """Runner A holds a row; runner B on the same work dir exits at once naming A; every row
    runs once (two runners used to start the same rows at the same time)."""
    suite, work = write_suite(tmp_path), tmp_path / "work"
    (tmp_path / "hold").touch()
    cmd = [sys.executable, str(ROOT / "tools/run_suite.py"), str(suite), "--work-dir", str(work),
           "--no-tables"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    end = time.time() + 120
    while calls(tmp_path) != ["exp_a"]:
        assert time.time() < end and first.poll() is None, "the first runner did not start"
        time.sleep(0.05)
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert f"is in use by pid {first.pid} (run_suite.py)" in second.stderr, second.stderr
    (tmp_path / "hold").unlink()
    out = first.communicate(timeout=120)[0]
    assert first.returncode == 0, out
    assert calls(tmp_path) == ["exp_a", "exp_b"]
    assert not (work / ".lock").exists()
