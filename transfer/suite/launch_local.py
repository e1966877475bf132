"""Steps run as processes on this machine, up to ``--jobs`` at once (worker threads of the
runner); a row's seeds can share one process (``--group-seeds``). Each attempt is recorded in
its ``suite_status.json``: running (with the pid, so a second runner leaves a live step alone),
then its end, by ``state.attempt_end``. ``stop_all`` stops every running process (Ctrl-C,
SIGTERM); what they leave unfinished is recorded ``interrupted``.
"""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from pretrain.common.durations import duration
from transfer.suite.options import RunOptions
from transfer.suite.plan import Step
from transfer.suite.processes import (Heartbeat, group_log, launch_argv, run_logged,
                                      stop_process_group)
from transfer.suite.spec import ROOT
from transfer.suite.state import attempt_end
from transfer.suite.status_file import fingerprint, now_utc, write_status


class LocalLauncher:
    def __init__(self, options: RunOptions):
        self.opt = options
        self.procs: set = set()  # processes running now (stopped on Ctrl-C / SIGTERM)
        self.stopping = False

    def run(self, group: list[Step]) -> None:
        """Runs in a worker thread; the main thread calls ``stop_all``. A group (one row's
        seeds) is one process; each seed's state is read from its own output."""
        step = group[0]
        argv, log = launch_argv(step, group), group_log(group)
        for member in group:
            member.folder.mkdir(parents=True, exist_ok=True)
            write_status(member, state="running", argv=argv, command=member.argv[1:],
                         log=str(log), started_at=now_utc(), host=socket.gethostname(),
                         fingerprint=fingerprint(member.source), returncode=None,
                         job_id=None, error=None)
        start = time.time()
        label = step.id if len(group) == 1 else f"{step.row}/seeds"
        rc = run_logged(argv, str(log), str(ROOT),
                        Heartbeat(label, self.opt.heartbeat_s, self.opt.stream),
                        env=self._env(step), on_start=lambda proc: self._started(group, proc),
                        on_end=self.procs.discard)
        wall = round(time.time() - start, 1)
        for member in group:
            self._record_end(member, rc, wall / len(group), log)

    def stop_all(self) -> None:
        self.stopping = True
        for proc in list(self.procs):
            stop_process_group(proc)

    def _started(self, group: list[Step], proc) -> None:
        self.procs.add(proc)
        for step in group:
            write_status(step, pid=proc.pid)  # a second runner leaves a live step alone

    def _record_end(self, step: Step, rc: int, wall: float, log: Path) -> None:
        """``wall``: the step's share of its process's time (a group shares one process)."""
        state, error = attempt_end(step, rc, stopping=self.stopping)
        if state == "interrupted":
            write_status(step, state=state, returncode=rc, wall_s=wall)
            return
        write_status(step, state=state, returncode=rc, wall_s=wall, gpus=step.gpus,
                     gpu_type=gpu_type(step.gpus), finished_at=now_utc(), error=error)
        if state == "finished":
            print(f"  finished {step.id} in {duration(wall)}", flush=True)
        else:
            print(f"  FAILED   {step.id} after {duration(wall)}: {error}; log {log}",
                  flush=True)

    def _env(self, step: Step) -> dict:
        """CPU steps run in parallel get an equal share of the cores as OpenMP threads, unless
        OMP_NUM_THREADS is set: on a busy CPU, more threads than cores spin at every barrier
        and made a pretraining step 20x slower here (2 shared cores)."""
        env = dict(os.environ)
        if step.gpus == 0 and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, self.opt.jobs)))
        return env


def gpu_type(gpus: int) -> str:
    """The GPUs' name for the record ('cpu' for a CPU step)."""
    if gpus == 0:
        return "cpu"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True)
        names = out.stdout.strip().splitlines()
        if out.returncode == 0 and names:
            return names[0].strip()
    return "unknown"
