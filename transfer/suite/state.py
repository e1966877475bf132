"""A step's state: the one place that decides it.

Everything that shows or uses a step's state asks ``step_state``: the runner (what to skip,
whether a step another one needs finished, the summary and the exit status), results.json
(``results.py``, so the tables), ``tools/run_suite.py --dry-run`` and the demo's progress line.
It reads the step's output and its ``suite_status.json`` (the last attempt, ``status_file.py``),
asks whether the process or SLURM job that record names still runs and whether the step's
framework is installed here, and, during a run, takes the runner's verdicts: why the runner did
not start a step (``scheduler.py``). Nothing else merges these.

The states and their order of priority (the first that applies wins):

1. ``finished``: the output exists and reads (``backbone.pth`` of pretraining or of BatchNorm
   recalibration, the experiment's ``metrics.json``), and neither
   the backbone file it read nor its command changed since it ran. An output wins over
   everything else: a recorded failure, a non-zero exit status, a verdict. Finished steps are
   skipped, so running a suite again resumes it.
2. the runner's verdict in this run: ``blocked`` (a step it needs did not finish, its backbone
   file is missing, its pretraining was not asked for, a required framework is missing) or
   ``missing_extra`` (only an optional extra is missing, transfer/extras.py). It says why this
   run did not start the step, so it comes before what an earlier attempt left (a stale or
   failed step that could not be retried is ``blocked``).
3. ``stale``: the output exists, but the backbone file changed since the step ran (a new
   pretraining, a replaced checkpoint) or its command did (suite file, ``--set``, ``--gpus``,
   data root); the runner moves its folder aside and runs it again.
4. the last attempt, as ``suite_status.json`` records it: ``failed`` and ``interrupted`` as
   recorded; ``running`` while its process lives on this machine (another runner, or the orphan
   of a killed one), ``interrupted`` once it is gone (its runner was killed); a submitted SLURM
   job is ``queued`` while squeue lists it (or cannot be asked), and once it left the queue
   without the output the step is pending again (5, 6).
5. a step with nothing of the above whose framework is missing here: ``missing_extra`` for an
   optional extra, ``blocked`` for a required framework; what ``--dry-run`` and
   ``--collect-only`` show without a runner.
6. ``pending``: not run yet.

When an attempt ends, ``attempt_end`` gives the state to record by the same rule (an output
wins). A seeded row shows its seeds' most pressing state (``seeds.row_state``).
"""
import shutil
import socket
import subprocess

from pretrain.common.pids import pid_alive
from transfer import extras
from transfer.suite.plan import Step
from transfer.suite.status_file import fingerprint, read_status

# The runner's verdicts of a run: step id -> (blocked | missing_extra, why)
Verdicts = dict[str, tuple[str, str]]


def step_state(step: Step, verdicts: Verdicts | None = None) -> tuple[str, str]:
    """(state, reason) of ``step`` in the order of priority above; ``verdicts``: the runner's,
    during a run (None: what is on disk, as ``--dry-run`` and ``--collect-only`` see it)."""
    status = read_status(step)
    done, why = output_ok(step)
    changed = _changed_since_it_ran(step, status) if done else ""
    if done and not changed:
        return "finished", ""
    if verdicts and step.id in verdicts:
        return verdicts[step.id]
    if done:
        return "stale", changed
    state, reason = _last_attempt(status)
    if state != "pending":
        return state, reason
    kind, missing = framework_missing(step)
    if kind:
        return kind, missing
    return "pending", reason or why


def attempt_end(step: Step, returncode: int | None, stopping: bool = False,
                error: str | None = None) -> tuple[str, str | None]:
    """(state, error) to record when an attempt ends (its process exited, its SLURM job
    ended): ``finished`` when its output is there, whatever the exit status; otherwise
    ``interrupted`` when the runner was stopping, else ``failed`` with ``error`` (a crashed or
    cancelled job), the non-zero exit status, or why the output is not there."""
    ok, why = output_ok(step)
    if ok:
        return "finished", None
    if stopping:
        return "interrupted", None
    if error:
        return "failed", error
    return "failed", f"exit status {returncode}" if returncode else why


def output_ok(step: Step) -> tuple[bool, str]:
    """Whether the step's output exists and reads (an experiment's metrics.json is parsed)."""
    if not step.output.is_file():
        return False, f"{step.output} not written yet"
    if step.kind == "experiment":
        from transfer.metrics import read_metrics

        try:
            read_metrics(step.output)
        except ValueError as exc:
            return False, str(exc)
    return True, ""


def _changed_since_it_ran(step: Step, status: dict) -> str:
    """Why a finished step is stale ('' when it is not): its backbone file or its command
    changed since the run that wrote its output."""
    recorded = status.get("fingerprint")
    if step.kind != "pretrain" and recorded and recorded != fingerprint(step.source):
        return f"{step.source} changed since this step ran"
    command = status.get("command")  # the tool's arguments, without the interpreter
    if command is not None and command != step.argv[1:]:
        return "its command changed since it ran (suite file, --set, --gpus, data root)"
    return ""


def _last_attempt(status: dict) -> tuple[str, str]:
    """What the record of the last attempt says, for a step without its output: queued,
    running, failed, interrupted, or pending (nothing recorded, or a SLURM job that left the
    queue without a result)."""
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
    return "pending", ""


def slurm_job_active(job_id: str | None) -> bool | None:
    """True/False when squeue can tell, None when it cannot (no squeue here)."""
    if not job_id or not shutil.which("squeue"):
        return None
    out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True,
                         text=True)
    return out.returncode == 0 and bool(out.stdout.strip())


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
