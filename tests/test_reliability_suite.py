"""The suite runner under SIGINT / SIGTERM, and finished rows whose metrics.json went bad
(docs/reliability.md, "Suite runner"). Rows are `command` tasks: a small script that
records its call, waits while a hold file exists, and writes metrics.json through
transfer.metrics.write_metrics."""
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

ROOT = Path(__file__).resolve().parent.parent
ROW = textwrap.dedent('''
    import pathlib, sys, time
    out, control, experiment, source, root = sys.argv[1:6]
    sys.path.insert(0, root)  # the repository: transfer.metrics
    control = pathlib.Path(control)
    with open(control / "calls.txt", "a") as f:
        f.write(source + "." + experiment + "\\n")
    while (control / ("hold." + experiment)).exists():
        time.sleep(0.05)
    from transfer.metrics import write_metrics
    score = 10.0 + 2 * int(source[-1]) + (5.0 if experiment == "exp_b" else 0.0)
    write_metrics(pathlib.Path(out) / "metrics.json", task="semantic_segmentation",
                  dataset="fake", protocol="fake", config="none",
                  backbone=dict(arch="resnet18", source=source),
                  metrics=dict(mIoU=score, mAcc=score + 1), wall_s=0.1, gpus=0, gpu_type="cpu")
''')
ROWS = ["random:0.exp_a", "random:0.exp_b", "random:1.exp_a", "random:1.exp_b"]


def write_suite(tmp: Path) -> Path:
    (tmp / "control").mkdir()
    (tmp / "row.py").write_text(ROW)
    command = (f'["{{python}}", "{tmp / "row.py"}", "{{row_dir}}", "{{control}}", '
               f'"{{experiment}}", "{{source}}", "{{root}}"]')
    suite = tmp / "suite.yaml"
    suite.write_text(textwrap.dedent(f'''
        name: reliability_suite
        variables: {{control: {tmp / "control"}}}
        backbones:
          bb0: {{arch: resnet18, source: "random:0", label: random 0}}
          bb1: {{arch: resnet18, source: "random:1", label: random 1}}
        experiments:
          exp_a: {{task: command, command: {command}, metric: mIoU, metrics: [mAcc], gpus: 0}}
          exp_b: {{task: command, command: {command}, metric: mIoU, gpus: 0}}
    '''))
    return suite


def calls(tmp: Path) -> list[str]:
    path = tmp / "control" / "calls.txt"
    return path.read_text().split() if path.exists() else []


def run_suite(suite: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools/run_suite.py"), str(suite),
                           "--work-dir", str(work), *extra], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def rows(work: Path) -> dict[str, dict]:
    return {r["id"]: r for r in json.loads((work / "results.json").read_text())["rows"]}


def wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_suite_skips_finished_rows_and_completes_the_table(signum, tmp_path):
    suite, work = write_suite(tmp_path), tmp_path / "work"
    (tmp_path / "control" / "hold.exp_b").touch()
    # started with SIGINT ignored, as a background job of a script is: the runner must still
    # stop on it (it inherited SIG_IGN and ignored `kill -INT` before)
    runner = subprocess.Popen([sys.executable, str(ROOT / "tools/run_suite.py"), str(suite),
                               "--work-dir", str(work), "--no-tables"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    wait_for(lambda: calls(tmp_path) == ROWS[:2])  # row 1 finished, row 2 holding
    runner.send_signal(signum)
    out = runner.communicate(timeout=60)[0]
    assert runner.returncode == 130 and "run the same command again to resume" in out, out
    status = json.loads((work / "runs/bb0/exp_b/suite_status.json").read_text())
    assert status["state"] == "interrupted"
    assert rows(work)["bb0/exp_a"]["status"] == "finished"

    (tmp_path / "control" / "hold.exp_b").unlink()
    result = run_suite(suite, work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "done     bb0/exp_a" in result.stdout
    assert calls(tmp_path) == ROWS[:2] + ROWS[1:]  # the finished row was not run again
    final = rows(work)
    assert {r["status"] for r in final.values()} == {"finished"} and len(final) == 4
    assert sorted(r["metrics"]["mIoU"] for r in final.values()) == [10.0, 12.0, 15.0, 17.0]
    table = (work / "table" / "table.md").read_text()
    for label in ("random 0", "random 1", "exp_a", "exp_b"):
        assert label in table, table


CORRUPTIONS = {
    "deleted": None,
    "truncated": lambda text: text[: len(text) // 2],
    "zero_bytes": lambda text: "",
    "binary": lambda text: "\x00\xff\xfe garbage",
    "not_an_object": lambda text: "42",
    "missing_metrics": lambda text: json.dumps({k: v for k, v in json.loads(text).items()
                                                if k != "metrics"}),
}


def test_a_finished_row_with_a_bad_metrics_file_is_redone_alone(tmp_path):
    suite, work = write_suite(tmp_path), tmp_path / "work"
    result = run_suite(suite, work, "--no-tables")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert calls(tmp_path) == ROWS
    target = work / "runs" / "bb1" / "exp_a" / "metrics.json"
    good = json.loads(target.read_text())["metrics"]
    for name, corrupt in CORRUPTIONS.items():
        before = len(calls(tmp_path))
        if corrupt is None:
            target.unlink()
        else:
            target.write_bytes(corrupt(target.read_text()).encode("latin-1"))
        result = run_suite(suite, work, "--no-tables")
        assert result.returncode == 0, (name, result.stdout[-3000:] + result.stderr[-3000:])
        assert calls(tmp_path)[before:] == ["random:1.exp_a"], name  # that row only
        final = rows(work)
        assert {r["status"] for r in final.values()} == {"finished"}, name
        assert json.loads(target.read_text())["metrics"] == good, name
