"""A step's process: its command line (torchrun, one row's seeds in one process), run with its
output appended to its log and its whole process group stopped on interrupt, and the console
heartbeat drawn from that output. Used on this machine (``launch_local.py``) and inside SLURM
jobs (``launch_slurm.py`` pickles ``run_logged``, so this module stays importable there).
"""
import os
import re
import selectors
import signal
import socket
import subprocess
import time
from pathlib import Path

from pretrain.common.durations import duration
from transfer.suite.plan import Step
from transfer.suite.status_file import now_utc


def launch_argv(step: Step, group: list[Step] | None = None) -> list[str]:
    """The tool's command, under torchrun when it needs more than one process; for a
    ``group`` of one row's seeds, the row's command with ``--seeds`` (one process for all)."""
    argv = list(step.argv)
    if group and len(group) > 1:
        argv = list(step.row_argv) + ["--seeds", *(str(s.seed) for s in group)]
    if step.spawn == "torchrun" and step.gpus > 1:
        return [argv[0], "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={step.gpus}"] + argv[1:]
    return argv


def group_log(group: list[Step]) -> Path:
    """Where a group's process logs: the step's own log; a grouped row's one process logs into
    the row folder (the seeds' parent)."""
    return group[0].log if len(group) == 1 else group[0].folder.parent / "suite.log"


def run_logged(argv: list[str], log: str, cwd: str, on_output=None,
               env: dict | None = None, on_start=None, on_end=None) -> int:
    """Run ``argv`` with its output appended to ``log``; ``on_output(text)`` sees each piece,
    or is called with ``None`` every few seconds of silence. Returns the exit status."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        sink.write(f"\n=== {now_utc()} {socket.gethostname()}: {' '.join(argv)}\n".encode())
        sink.flush()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        if on_start:
            on_start(proc)
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                while True:
                    if not sel.select(timeout=5.0):
                        if on_output:
                            on_output(None)
                        continue
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    sink.write(chunk)
                    sink.flush()
                    if on_output:
                        on_output(chunk.decode(errors="replace"))
            return proc.wait()
        except BaseException:
            stop_process_group(proc)
            raise
        finally:
            if on_end:
                on_end(proc)


def stop_process_group(proc: subprocess.Popen) -> None:
    """Stop the child and everything it started (torchrun workers, dataloader workers)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


class Heartbeat:
    """Prints the step's last output line every ``every`` seconds (or every line if stream)."""

    def __init__(self, step_id: str, every: float, stream: bool):
        self.step_id, self.every, self.stream = step_id, every, stream
        self.start = self.last_print = time.time()
        self.last_line = ""
        self.partial = ""

    def __call__(self, text: str | None) -> None:
        if text:
            pieces = re.split(r"[\r\n]", self.partial + text)
            self.partial = pieces.pop()
            lines = [p.strip() for p in pieces if p.strip()]
            if self.stream:
                for line in lines:
                    print(f"    | {line}", flush=True)
            if lines:
                self.last_line = lines[-1]
        if not self.stream and time.time() - self.last_print >= self.every:
            elapsed = int(time.time() - self.start)
            line = self.last_line if len(self.last_line) <= 110 else self.last_line[:107] + "..."
            print(f"    [{self.step_id} {duration(elapsed)}] {line}", flush=True)
            self.last_print = time.time()
