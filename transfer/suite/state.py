"""A step's state, read from the files in its folder, so an interrupted suite resumes where it
stopped:

- a step is finished when its output exists (``backbone.pth`` of pretraining or of BatchNorm
  recalibration, the experiment's ``metrics.json``, readable);
  finished steps are skipped;
- ``suite_status.json`` beside it records the last attempt: state (running, finished, failed,
  interrupted, submitted), return code, log path, wall time, the source file's size and mtime,
  the SLURM job id;
- a finished step whose backbone file changed since it ran (a new pretraining, a replaced
  checkpoint), or whose command changed (suite file, ``--set``, ``--gpus``, data root), is
  stale (the runner moves its folder aside and runs it again);
- a step whose framework is missing here is ``blocked`` (a required one) or ``missing_extra``
  (an optional extra, transfer/extras.py).
"""
import json
import os
import shutil
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from pretrain.files import write_json
from pretrain.pids import pid_alive
from transfer import extras
from transfer.suite.plan import Step

STATUS_FILE = "suite_status.json"


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_status(step: Step) -> dict:
    path = step.folder / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def write_status(step: Step, **fields) -> dict:
    status = dict(read_status(step), step=step.id, updated_at=now_utc(), **fields)
    write_json(step.folder / STATUS_FILE, status)
    return status


def fingerprint(source: str) -> dict:
    """What identifies a backbone file cheaply: path, size and modification time."""
    if not source or source.startswith("random"):
        return {"source": source}
    try:
        stat = os.stat(source)
    except OSError:
        return {"source": source, "missing": True}
    return {"source": source, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def slurm_job_active(job_id: str | None) -> bool | None:
    """True/False when squeue can tell, None when it cannot (no squeue here)."""
    if not job_id or not shutil.which("squeue"):
        return None
    out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True,
                         text=True)
    return out.returncode == 0 and bool(out.stdout.strip())


def output_ok(step: Step) -> tuple[bool, str]:
    if not step.output.is_file():
        return False, f"{step.output} not written yet"
    if step.kind == "experiment":
        from transfer.metrics import read_metrics

        try:
            read_metrics(step.output)
        except ValueError as exc:
            return False, str(exc)
    return True, ""


def step_state(step: Step) -> tuple[str, str]:
    """(state, reason): finished | stale | queued | running | failed | interrupted | pending.
    A step recorded as running whose process is gone (its runner was killed) is interrupted;
    one whose process still runs (another runner, or an orphan of a killed one) is running."""
    status = read_status(step)
    done, why = output_ok(step)
    if done:
        recorded = status.get("fingerprint")
        if step.kind != "pretrain" and recorded and recorded != fingerprint(step.source):
            return "stale", f"{step.source} changed since this step ran"
        command = status.get("command")  # the tool's arguments, without the interpreter
        if command is not None and command != step.argv[1:]:
            return "stale", "its command changed since it ran (suite file, --set, --gpus, data root)"
        return "finished", ""
    state = status.get("state")
    if state == "submitted":
        active = slurm_job_active(status.get("job_id"))
        if active is not False:
            return "queued", f"SLURM job {status.get('job_id')}" + (
                "" if active else " (squeue not available here: assumed still queued)")
        return "pending", f"SLURM job {status.get('job_id')} left the queue without a result"
    if state in ("failed", "interrupted"):
        return state, f"return code {status.get('returncode')}, log {status.get('log')}"
    if state == "running":
        pid = status.get("pid")
        if status.get("host") == socket.gethostname() and pid and pid_alive(pid):
            return "running", f"process {pid} on this machine is running it, log {status.get('log')}"
        # the runner was killed while this step ran, and its process is gone
        return "interrupted", f"was running on {status.get('host')}, log {status.get('log')}"
    return "pending", why


# The framework each task's tool imports. detectron2 is an optional extra (its rows are
# ``missing_extra`` without it, not a failure); MMSegmentation is part of the environment.
FRAMEWORKS = {"segmentation": "mmseg", "dense_retrieval": "mmseg", "detection": "detectron2"}
REQUIRED_HINTS = {"mmseg": "MMSegmentation is not installed (tools/setup_env.sh installs it; "
                           "docs/segmentation.md)"}


def framework_missing(step: Step) -> tuple[str, str]:
    """('', '') when the step's framework can run here, else (state, why): ``missing_extra``
    for an optional extra (transfer/extras.py; hidden ones too), ``blocked`` for a required
    framework. The runner uses its own interpreter for the tools, so looking here is looking
    there (VICREGL_HIDE_EXTRAS is inherited by them)."""
    name = FRAMEWORKS.get(step.experiment.task if step.experiment else "")
    if name is None or extras.available(name):
        return "", ""
    if name in extras.INSTALL_HINTS:
        return "missing_extra", extras.missing_reason(name)
    hidden = name in extras.hidden()
    return "blocked", extras.missing_reason(name) if hidden else REQUIRED_HINTS[name]
