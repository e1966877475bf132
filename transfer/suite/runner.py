"""Run a suite's plan (``plan.py``): resumable, on this machine or on SLURM.

Whether a step is finished, stale, running or failed is read from its folder (``state.py``),
so running the same plan again resumes it. The output of every step goes to ``suite.log`` in
its folder; the console gets one status line per step and a heartbeat (elapsed time and the
log's last line) while it runs. After every step ``WORK_DIR/results.json`` is rewritten
(``results.py``).

A step that cannot start is ``blocked`` (a step it needs did not finish, its backbone file or
a required framework is missing) or ``missing_extra`` (only an optional extra is missing,
transfer/extras.py): the run's exit status is 1 for failed, interrupted and blocked steps,
0 when the only ones left are ``missing_extra``.
"""
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pretrain.durations import duration
from transfer.suite.plan import REWRITTEN_KINDS, Plan, Step
from transfer.suite.results import write_results
from transfer.suite.spec import ROOT
from transfer.suite.state import (fingerprint, framework_missing, now_utc, output_ok,
                                  step_state, write_status)


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


def run_logged(argv: list[str], log: str, cwd: str, on_output=None,
               env: dict | None = None, on_start=None, on_end=None) -> int:
    """Run ``argv`` with its output appended to ``log``; ``on_output(text)`` sees each piece,
    or is called with ``None`` every few seconds of silence. Returns the exit status. Used
    on this machine and inside SLURM jobs (it must stay importable by pickled jobs)."""
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
            elapsed = int(time.time() - self.start)
            line = self.last_line if len(self.last_line) <= 110 else self.last_line[:107] + "..."
            print(f"    [{self.step_id} {duration(elapsed)}] {line}", flush=True)
            self.last_print = time.time()


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
    # run the ready seeds of a row in one process (tools that take --seeds): the start-up is
    # paid once instead of once per seed, which on a small CPU machine costs more than a
    # seed's evaluation; on a multi-GPU machine separate steps can run side by side instead
    group_seeds: bool = False
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
        return write_results(self.plan, self.blocked, self.missing_extra)

    def _move_aside(self, step: Step, why: str) -> None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        target = step.folder.with_name(f"{step.folder.name}.{why}-{stamp}")
        extra = 1
        while target.exists():  # moved aside twice within one second: never onto the first
            target = step.folder.with_name(f"{step.folder.name}.{why}-{stamp}-{extra}")
            extra += 1
        print(f"  moving {step.folder} aside to {target.name} ({why})", flush=True)
        step.folder.rename(target)

    # ---- the loop ----------------------------------------------------------------------
    def _set_aside_reruns_and_stale(self) -> None:
        """Folders of finished steps asked for again (--rerun) and of stale steps move aside."""
        import fnmatch

        for step in self.steps:
            state, reason = step_state(step)
            forced = any(fnmatch.fnmatchcase(step.id, p) for p in self.opt.rerun)
            if state == "finished" and forced:
                self._move_aside(step, "rerun")
            elif state == "stale":
                print(f"  {step.id}: stale ({reason})", flush=True)
                if step.kind not in REWRITTEN_KINDS:  # a derived file is simply rewritten
                    self._move_aside(step, "stale")

    def run(self) -> int:
        self._set_aside_reruns_and_stale()
        self.total = total = sum(1 for s in self.steps if step_state(s)[0] != "finished")
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
                    if step not in waiting:  # started with an earlier seed of its row
                        continue
                    decision = self._decide(step, running.values())
                    if decision == "wait":
                        continue
                    waiting.remove(step)
                    if decision == "start":
                        if self.opt.launcher == "slurm":
                            self._announce([step])
                            self._submit(step)
                            self.write_results()
                        else:
                            group = self._seed_group(step, waiting, running.values())
                            self._announce(group)
                            running[pool.submit(self._run_here, group)] = step
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

    def _seed_group(self, step: Step, waiting: list[Step], running) -> list[Step]:
        """``step`` and the other seeds of its row that can start now (taken off
        ``waiting``), when seeds are grouped and the row's tool takes ``--seeds``."""
        if not (self.opt.group_seeds and step.row_argv and step.seed is not None):
            return [step]
        group = [step]
        for other in [s for s in waiting if s.row == step.row]:
            decision = self._decide(other, running)
            if decision != "wait":
                waiting.remove(other)
            if decision == "start":
                group.append(other)
        return group

    def _announce(self, group: list[Step]) -> None:
        step = group[0]
        self.index += len(group)
        name = step.id if len(group) == 1 else (
            f"{step.row}/seed{{{','.join(str(s.seed) for s in group)}}} in one process")
        print(f"[{self.index}/{self.total}] {name} ({step.kind}, {self._where(step)}); "
              f"log {self._log(group)}", flush=True)

    @staticmethod
    def _log(group: list[Step]) -> Path:
        """A grouped row's one process logs into the row folder (the seeds' parent)."""
        return group[0].log if len(group) == 1 else group[0].folder.parent / "suite.log"

    def _where(self, step: Step) -> str:
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
    def _run_here(self, group: list[Step]) -> None:
        """Runs in a worker thread (``--jobs``); the main thread stops ``self.procs``. A group
        (one row's seeds) is one process; each seed's state is read from its own output."""
        step = group[0]
        argv, log = launch_argv(step, group), self._log(group)
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

    def _record_end(self, step: Step, rc: int, wall: float, log: Path) -> None:
        """``wall``: the step's share of its process's time (a group shares one process)."""
        ok, why = output_ok(step)
        if self.stopping and not ok:
            write_status(step, state="interrupted", returncode=rc, wall_s=wall)
            return
        if rc != 0 and not ok:
            why = f"exit status {rc}"
        write_status(step, state="finished" if ok else "failed", returncode=rc, wall_s=wall,
                     gpus=step.gpus, gpu_type=gpu_type(step.gpus), finished_at=now_utc(),
                     error=None if ok else why)
        if ok:
            print(f"  finished {step.id} in {duration(wall)}", flush=True)
        else:
            print(f"  FAILED   {step.id} after {duration(wall)}: {why}; log {log}",
                  flush=True)

    def _started(self, group: list[Step], proc) -> None:
        self.procs.add(proc)
        for step in group:
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
                         submitted_at=now_utc(), fingerprint=fingerprint(step.source),
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
                     submitted_at=now_utc(), fingerprint=fingerprint(step.source),
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
                             finished_at=now_utc(), error=None if ok else why)
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

