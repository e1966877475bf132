"""Run a suite's plan (``transfer.suite``): resumable, on this machine or on SLURM.

State lives on disk, in each step's folder, so an interrupted suite resumes where it stopped:

- a step is finished when its output exists (``backbone.pth`` of pretraining, the converted
  ``mmseg.pth``, the experiment's ``metrics.json``, readable); finished steps are skipped;
- ``suite_status.json`` beside it records the last attempt: state (running, finished, failed,
  interrupted, submitted), return code, log path, wall time, the source file's size and mtime,
  the SLURM job id;
- a finished step whose backbone file changed since it ran (a new pretraining, a replaced
  checkpoint), or whose command changed (suite file, ``--set``, ``--gpus``, data root), is
  stale: its folder is moved aside (``<folder>.stale-<time>``) and it runs again.

The output of every step goes to ``suite.log`` in its folder; the console gets one status
line per step and a heartbeat (elapsed time and the log's last line) while it runs.
After every step ``WORK_DIR/results.json`` is rewritten (atomically): one row per backbone x
experiment with its metrics, cost and protocol fingerprint (a seeded row: the mean and std
over its seeds, each seed's record kept), what tools/make_table.py reads.

A step that cannot start is ``blocked`` (a step it needs did not finish, its backbone file or
a required framework is missing) or ``missing_extra`` (only an optional extra is missing,
transfer/extras.py): the run's exit status is 1 for failed, interrupted and blocked steps,
0 when the only ones left are ``missing_extra``.
"""
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pretrain.durations import duration
from pretrain.files import write_json
from pretrain.pids import pid_alive
from pretrain.provenance import git_sha
from transfer import extras
from transfer.seeds import aggregate_metrics, row_state
from transfer.suite import ROOT, Plan, Step

STATUS_FILE = "suite_status.json"
RESULTS_FILE = "results.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_status(step: Step) -> dict:
    path = step.folder / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def write_status(step: Step, **fields) -> dict:
    status = dict(read_status(step), step=step.id, updated_at=_now(), **fields)
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


def gpu_type(gpus: int) -> str:
    if gpus == 0:
        return "cpu"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True)
        names = out.stdout.strip().splitlines()
        if out.returncode == 0 and names:
            return names[0].strip()
    return "unknown"


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


def launch_argv(step: Step) -> list[str]:
    """The tool's command, under torchrun when it needs more than one process."""
    if step.spawn == "torchrun" and step.gpus > 1:
        return [step.argv[0], "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={step.gpus}"] + step.argv[1:]
    return list(step.argv)


def run_logged(argv: list[str], log: str, cwd: str, on_output=None,
               env: dict | None = None, on_start=None, on_end=None) -> int:
    """Run ``argv`` with its output appended to ``log``; ``on_output(text)`` sees each piece,
    or is called with ``None`` every few seconds of silence. Returns the exit status. Used
    on this machine and inside SLURM jobs (it must stay importable by pickled jobs)."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        sink.write(f"\n=== {_now()} {socket.gethostname()}: {' '.join(argv)}\n".encode())
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
            _stop(proc)
            raise
        finally:
            if on_end:
                on_end(proc)


def _stop(proc: subprocess.Popen) -> None:
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
            elapsed = duration(time.time() - self.start)
            line = self.last_line if len(self.last_line) <= 110 else self.last_line[:107] + "..."
            print(f"    [{self.step_id} {elapsed}] {line}", flush=True)
            self.last_print = time.time()


@dataclass
class RunOptions:
    launcher: str = "local"  # local | slurm
    jobs: int = 1  # steps run at the same time on this machine
    pretrain: bool = False  # run the suite's pretraining steps (otherwise they must be done)
    stream: bool = False
    heartbeat_s: float = 20.0
    skip_failed: bool = False
    rerun: list[str] = field(default_factory=list)  # step id globs to run again
    retry_hint: str = ""  # command prefix to print for retrying one step
    # SLURM (submitit)
    partition: str | None = None
    timeout_min: int = 24 * 60
    cpus_per_gpu: int = 10
    slurm_extra: dict = field(default_factory=dict)
    slurm_cluster: str | None = None  # None: submitit decides (slurm); "local" for tests
    wait: bool = False


class SuiteRunner:
    def __init__(self, plan: Plan, steps: list[Step], options: RunOptions):
        self.plan, self.steps, self.opt = plan, steps, options
        self.blocked: dict[str, str] = {}
        self.missing_extra: dict[str, str] = {}  # rows whose optional extra is not installed
        self.submitted: dict[str, object] = {}  # submitit jobs submitted by this process
        self.procs: set = set()  # processes running now (stopped on Ctrl-C / SIGTERM)
        self.stopping = False
        self.index = 0

    # ---- bookkeeping -------------------------------------------------------------------
    def state(self, step: Step) -> tuple[str, str]:
        if step.id in self.blocked:
            return "blocked", self.blocked[step.id]
        if step.id in self.missing_extra:
            return "missing_extra", self.missing_extra[step.id]
        return step_state(step)

    def write_results(self) -> Path:
        path = self.plan.work_dir / RESULTS_FILE
        write_json(path, collect(self.plan, self.blocked, self.missing_extra))
        return path

    def _move_aside(self, step: Step, why: str) -> None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        target = step.folder.with_name(f"{step.folder.name}.{why}-{stamp}")
        print(f"  moving {step.folder} aside to {target.name} ({why})", flush=True)
        step.folder.rename(target)

    # ---- the loop ----------------------------------------------------------------------
    def run(self) -> int:
        import fnmatch

        for step in self.steps:
            state, reason = step_state(step)
            forced = any(fnmatch.fnmatchcase(step.id, p) for p in self.opt.rerun)
            if state == "finished" and forced:
                self._move_aside(step, "rerun")
            elif state == "stale":
                print(f"  {step.id}: stale ({reason})", flush=True)
                if step.kind != "convert":  # a converted file is simply rewritten
                    self._move_aside(step, "stale")
        total = sum(1 for s in self.steps if step_state(s)[0] != "finished")
        print(f"suite {self.plan.suite.name}: {len(self.steps)} steps, {len(self.steps) - total} "
              f"already finished, work dir {self.plan.work_dir}", flush=True)
        started = time.time()
        waiting = list(self.steps)
        running: dict = {}  # future -> step
        pool = ThreadPoolExecutor(max_workers=max(1, self.opt.jobs))
        try:
            while waiting or running:
                for step in list(waiting):
                    if len(running) >= max(1, self.opt.jobs):
                        break
                    decision = self._decide(step, running.values())
                    if decision == "wait":
                        continue
                    waiting.remove(step)
                    if decision == "start":
                        self.index += 1
                        print(f"[{self.index}/{total}] {step.id} ({step.kind}, "
                              f"{self._where(step)}); log {step.log}", flush=True)
                        if self.opt.launcher == "slurm" and step.kind != "convert":
                            self._submit(step)
                            self.write_results()
                        else:
                            running[pool.submit(self._run_here, step)] = step
                if not running:
                    if waiting:  # cannot happen: a step only waits for a running one
                        raise RuntimeError(f"steps left waiting: {[s.id for s in waiting]}")
                    break
                done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    future.result()
                    self.write_results()
        except BaseException:
            self.stopping = True
            for proc in list(self.procs):
                _stop(proc)
            pool.shutdown(wait=True)
            self.write_results()
            raise
        pool.shutdown(wait=True)
        if self.submitted and self.opt.wait:
            self._wait_for_jobs()
        path = self.write_results()
        return self._summary(path, time.time() - started)

    def _decide(self, step: Step, running) -> str:
        """start | wait (a step it needs is still running) | skip (printed why)."""
        state, reason = step_state(step)
        if state == "finished":
            print(f"  done     {step.id}", flush=True)
            return "skip"
        if state in ("queued", "running"):
            print(f"  {state:8s} {step.id}: {reason}", flush=True)
            return "skip"
        if state == "failed" and self.opt.skip_failed:
            print(f"  skipped  {step.id}: failed before ({reason})", flush=True)
            return "skip"
        busy = {s.id for s in running}
        if any(need in busy for need in step.needs):
            return "wait"
        state, why = self._blocker(step)
        if step.kind == "pretrain" and not self.opt.pretrain:
            state, why = "blocked", (f"pretraining was not asked for (pass --pretrain to run "
                                     f"it, or put its backbone.pth at {step.output})")
        if not why:
            return "start"
        (self.missing_extra if state == "missing_extra" else self.blocked)[step.id] = why
        print(f"  {state:8s} {step.id}: {why}", flush=True)
        return "skip"

    def _where(self, step: Step) -> str:
        if step.kind == "convert":
            return "cpu"
        return f"{step.gpus} GPU" + ("s" if step.gpus != 1 else "") if step.gpus else "cpu"

    def _blocker(self, step: Step) -> tuple[str, str]:
        """('', '') when the step can start, else (blocked | missing_extra, why). The other
        blockers come first: a row is ``missing_extra`` only when the extra is all it lacks."""
        for need in step.needs:
            state, reason = self.state(self.plan.get(need))
            if state != "finished":
                return "blocked", (f"needs {need}, which is {state}"
                                   + (f" ({reason})" if reason else ""))
        source = step.source
        if source and not source.startswith("random") and not os.path.exists(source):
            return "blocked", (f"backbone file {source} does not exist (download it, or point "
                               "the suite at it with --set)")
        return framework_missing(step)

    # ---- running on this machine -------------------------------------------------------
    def _run_here(self, step: Step) -> None:
        """Runs in a worker thread (``--jobs``); the main thread stops ``self.procs``."""
        argv = launch_argv(step)
        step.folder.mkdir(parents=True, exist_ok=True)
        write_status(step, state="running", argv=argv, command=step.argv[1:], log=str(step.log),
                     started_at=_now(),
                     host=socket.gethostname(), fingerprint=fingerprint(step.source),
                     returncode=None, job_id=None, error=None)
        start = time.time()
        rc = run_logged(argv, str(step.log), str(ROOT),
                        Heartbeat(step.id, self.opt.heartbeat_s, self.opt.stream),
                        env=self._env(step), on_start=lambda proc: self._started(step, proc),
                        on_end=self.procs.discard)
        wall = round(time.time() - start, 1)
        if self.stopping:
            write_status(step, state="interrupted", returncode=rc, wall_s=wall)
            return
        ok, why = output_ok(step) if rc == 0 else (False, f"exit status {rc}")
        write_status(step, state="finished" if ok else "failed", returncode=rc, wall_s=wall,
                     gpus=step.gpus, gpu_type=gpu_type(step.gpus), finished_at=_now(),
                     error=None if ok else why)
        if ok:
            print(f"  finished {step.id} in {duration(wall)}", flush=True)
        else:
            print(f"  FAILED   {step.id} after {duration(wall)}: {why}; log {step.log}",
                  flush=True)

    def _started(self, step: Step, proc) -> None:
        self.procs.add(proc)
        write_status(step, pid=proc.pid)  # a second runner leaves a live step alone

    def _env(self, step: Step) -> dict:
        """CPU steps run in parallel get an equal share of the cores as OpenMP threads, unless
        OMP_NUM_THREADS is set: on a busy CPU, more threads than cores spin at every barrier
        and made a pretraining step 20x slower here (2 shared cores)."""
        env = dict(os.environ)
        if step.gpus == 0 and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, self.opt.jobs)))
        return env

    # ---- SLURM ---------------------------------------------------------------------------
    def _submit(self, step: Step) -> None:
        step.folder.mkdir(parents=True, exist_ok=True)
        if step.kind == "pretrain":  # tools/pretrain.py submits itself (requeue on timeout)
            argv = list(step.argv) + ["--slurm", "--nodes", str(step.nodes), "--gpus-per-node",
                                      str(max(step.gpus, 1)), "--timeout-min",
                                      str(self.opt.timeout_min)]
            if self.opt.partition:
                argv += ["--partition", self.opt.partition]
            out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
            step.log.parent.mkdir(parents=True, exist_ok=True)
            with open(step.log, "a") as sink:
                sink.write(out.stdout + out.stderr)
            found = re.search(r"submitted job (\S+)", out.stdout)
            if out.returncode != 0 or not found:
                write_status(step, state="failed", returncode=out.returncode, log=str(step.log))
                print(f"  FAILED   {step.id}: submission failed; log {step.log}", flush=True)
                return
            write_status(step, state="submitted", job_id=found.group(1), log=str(step.log),
                         submitted_at=_now(), fingerprint=fingerprint(step.source),
                         command=step.argv[1:])
            print(f"  submitted {step.id} as job {found.group(1)}", flush=True)
            return
        import submitit

        # the job unpickles run_logged from this repository, wherever sbatch starts it
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if str(ROOT) not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in paths if p])
        executor = submitit.AutoExecutor(folder=str(step.folder / "slurm"),
                                         cluster=self.opt.slurm_cluster)
        gpus = max(step.gpus, 1) if self.opt.slurm_cluster != "local" else step.gpus
        params = dict(name=f"{self.plan.suite.name}:{step.id}", nodes=1, tasks_per_node=1,
                      timeout_min=self.opt.timeout_min,
                      cpus_per_task=max(1, self.opt.cpus_per_gpu * max(step.gpus, 1)))
        if self.opt.slurm_cluster != "local":
            params.update(gpus_per_node=gpus, slurm_partition=self.opt.partition,
                          **self.opt.slurm_extra)
        executor.update_parameters(**params)
        job = executor.submit(run_logged, launch_argv(step), str(step.log), str(ROOT))
        self.submitted[step.id] = job
        write_status(step, state="submitted", job_id=str(job.job_id), log=str(step.log),
                     submitted_at=_now(), fingerprint=fingerprint(step.source),
                     command=step.argv[1:], gpus=step.gpus, returncode=None)
        print(f"  submitted {step.id} as job {job.job_id}", flush=True)

    def _wait_for_jobs(self) -> None:
        print(f"waiting for {len(self.submitted)} job(s)", flush=True)
        pending = dict(self.submitted)
        while pending:
            for step_id, job in list(pending.items()):
                if not job.done():
                    continue
                step = self.plan.get(step_id)
                try:
                    rc = job.result()
                except Exception as exc:  # the job crashed or was cancelled
                    rc, error = None, f"{type(exc).__name__}: {str(exc)[:300]}"
                else:
                    error = None if rc == 0 else f"exit status {rc}"
                ok, why = output_ok(step) if error is None else (False, error)
                write_status(step, state="finished" if ok else "failed", returncode=rc,
                             finished_at=_now(), error=None if ok else why)
                print(f"  {'finished' if ok else 'FAILED  '} {step_id}"
                      + ("" if ok else f": {why}; log {step.log}"), flush=True)
                del pending[step_id]
                self.write_results()
            time.sleep(2)

    # ---- the end -------------------------------------------------------------------------
    def _summary(self, path: Path, wall: float) -> int:
        """Print the counts and every step that did not finish; 0 when nothing failed, was
        interrupted or blocked (``missing_extra`` rows are listed but are not failures)."""
        counts: dict[str, int] = {}
        failed, missing = [], []
        for step in self.steps:
            state, reason = self.state(step)
            counts[state] = counts.get(state, 0) + 1
            if state in ("failed", "interrupted", "blocked"):
                failed.append((step, state, reason))
            elif state == "missing_extra":
                missing.append((step, state, reason))
        print(f"suite {self.plan.suite.name}: " + ", ".join(f"{n} {s}" for s, n in
                                                          sorted(counts.items()))
              + f" ({duration(wall)}); results in {path}", flush=True)
        for step, state, reason in failed + missing:
            print(f"  {state}: {step.id}: {reason}", flush=True)
            if state in ("failed", "interrupted") and self.opt.retry_hint:
                print(f"    retry alone: {self.opt.retry_hint} --only '{step.id}'", flush=True)
        if missing and not failed:
            print(f"  {len(missing)} row(s) need an optional extra that is not installed here: "
                  "not a failure (exit status 0)", flush=True)
        return 1 if failed else 0


def _numbers(metrics: dict) -> dict:
    """metrics.json ``metrics`` without the per-class tables (kept in the file itself)."""
    return {k: _numbers(v) if isinstance(v, dict) else v for k, v in metrics.items()
            if k != "per_class"}


def _row_state(step: Step, blocked: dict[str, str], missing: dict[str, str]) -> tuple[str, str]:
    """The step's state for the tables: the runner's verdict (blocked, missing_extra) when it
    did not finish, a missing framework for a pending step (``--collect-only``)."""
    state, reason = step_state(step)
    if state == "finished":
        return state, reason
    if step.id in missing:
        return "missing_extra", missing[step.id]
    if step.id in blocked:
        return "blocked", blocked[step.id]
    if state == "pending":
        kind, why = framework_missing(step)
        if kind:
            return kind, why
    return state, reason


def _step_record(step: Step, blocked: dict[str, str], missing: dict[str, str]) -> dict:
    """One step's state, metrics, cost and protocol fingerprint, from the files on disk."""
    from transfer.metrics import read_metrics

    state, reason = _row_state(step, blocked, missing)
    record = {"id": step.id, "seed": step.seed, "status": state, "reason": reason,
              "log": str(step.log), "metrics_path": str(step.output),
              "runner_wall_s": read_status(step).get("wall_s"), "metrics": None, "cost": None,
              "settings": None, "reference_settings": None}
    if state == "finished":
        found = read_metrics(step.output)
        record.update(metrics=_numbers(found["metrics"]), cost=found.get("cost"),
                      protocol=found.get("protocol"), dataset=found.get("dataset"),
                      backbone_record=found.get("backbone"), finished_at=found.get("finished_at"),
                      git_sha=found.get("git_sha"), settings=found.get("settings"),
                      reference_settings=found.get("reference_settings"))
    return record


def _summed_cost(costs: list[dict]) -> dict | None:
    """The cost of a seeded row: its seeds' wall time and GPU-hours added up."""
    if not costs:
        return None
    return {"wall_s": round(sum(c.get("wall_s") or 0.0 for c in costs), 1),
            "gpus": costs[0].get("gpus"), "gpu_type": costs[0].get("gpu_type"),
            "gpu_hours": round(sum(c.get("gpu_hours") or 0.0 for c in costs), 3)}


def _seeded_row(records: list[dict]) -> dict:
    """A row of several seeds: its state, the mean and std of every metric over the finished
    seeds, their number, the summed cost; each seed's own record kept under ``seeds``."""
    done = [r for r in records if r["status"] == "finished"]
    state, reason = row_state([(r["status"], r["reason"]) for r in records])
    means, stds = aggregate_metrics([r["metrics"] for r in done])
    first = done[0] if done else {}
    failing = next((r for r in records if r["status"] != "finished"), records[0])
    return {"status": state, "reason": reason, "log": failing["log"],
            "metrics_path": failing["metrics_path"],
            "runner_wall_s": sum(r["runner_wall_s"] or 0.0 for r in records) or None,
            "metrics": means if done else None, "metrics_std": stds if done else None,
            "n_seeds": len(done), "seeds_planned": len(records),
            "cost": _summed_cost([r["cost"] for r in done if r["cost"]]),
            "protocol": first.get("protocol"), "dataset": first.get("dataset"),
            "settings": first.get("settings"),
            "reference_settings": first.get("reference_settings"), "seeds": records}


def _row(steps: list[Step], blocked: dict[str, str], missing: dict[str, str]) -> dict:
    step = steps[0]
    exp, bb = step.experiment, step.backbone
    row = {"id": step.row, "backbone": bb.name, "backbone_label": bb.label, "arch": bb.arch,
           "source": step.source, "paper_models": bb.paper, "experiment": exp.name,
           "experiment_label": exp.label, "paper_experiment": exp.paper, "task": exp.task,
           "task_protocol": exp.protocol or None, "metric": exp.metric,
           "metrics_shown": [exp.metric] + exp.metrics}
    records = [_step_record(s, blocked, missing) for s in steps]
    if step.seed is None:
        record = records[0]
        del record["id"], record["seed"]
        finished = record["status"] == "finished"
        row.update(record, metrics_std=None, n_seeds=int(finished), seeds_planned=1, seeds=None)
    else:
        row.update(_seeded_row(records))
    return row


def collect(plan: Plan, blocked: dict[str, str] | None = None,
            missing: dict[str, str] | None = None) -> dict:
    """Everything the tables need, from the files on disk (not from memory): one row per
    backbone x experiment (a seeded row holds its seeds), the pretraining steps."""
    blocked, missing = blocked or {}, missing or {}
    grouped: dict[str, list[Step]] = {}
    for step in plan.rows:
        grouped.setdefault(step.row, []).append(step)
    rows = [_row(steps, blocked, missing) for steps in grouped.values()]
    pretraining = []
    for step in plan.steps:
        if step.kind != "pretrain":
            continue
        status = read_status(step)
        state, _ = step_state(step)
        wall, gpus = status.get("wall_s"), status.get("gpus", step.gpus)
        pretraining.append({
            "backbone": step.backbone.name, "status": state, "folder": str(step.folder),
            "wall_s": wall, "gpus": gpus, "gpu_type": status.get("gpu_type"),
            "gpu_hours": round(wall * gpus / 3600, 3) if wall is not None and gpus else 0.0,
            "job_id": status.get("job_id")})
    return {"suite": plan.suite.name, "suite_file": str(plan.suite.path),
            "paper_results": str(plan.suite.paper_results), "work_dir": str(plan.work_dir),
            "data_root": str(plan.data_root), "collected_at": _now(), "git_sha": git_sha(),
            "python": sys.executable, "rows": rows, "pretraining": pretraining}
