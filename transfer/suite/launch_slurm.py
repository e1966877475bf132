"""Steps submitted to SLURM, one job each, by one of two paths that differ only in who submits:

- pretraining: ``tools/pretrain.py --slurm`` submits itself through submitit, so that its job
  is requeued on preemption and time-out and resumes from its checkpoint; the runner runs that
  command and reads the job id from its output;
- every other step: a submitit job that runs the step's command through
  ``processes.run_logged`` (its output into the step's log).

Both record the submission in ``suite_status.json`` the same way (``submitted``, job id), which
``state.step_state`` reads as ``queued`` while squeue lists the job; running the suite again
later submits what became ready and collects what finished. ``--wait`` waits for the jobs of
the second path submitted by this process and records their end (``state.attempt_end``).
"""
import os
import re
import subprocess
import time

from transfer.suite.options import RunOptions
from transfer.suite.plan import Step
from transfer.suite.processes import launch_argv, run_logged
from transfer.suite.spec import ROOT
from transfer.suite.state import attempt_end
from transfer.suite.status_file import fingerprint, now_utc, write_status


class SlurmLauncher:
    def __init__(self, suite_name: str, options: RunOptions):
        self.suite_name, self.opt = suite_name, options
        self.submitted: dict[str, object] = {}  # step id -> submitit job (second path)

    def submit(self, step: Step) -> None:
        step.folder.mkdir(parents=True, exist_ok=True)
        if step.kind == "pretrain":
            job_id, returncode = self._pretraining_submits_itself(step)
        else:
            job_id, returncode = self._submitit_job(step), None
        if job_id is None:
            write_status(step, state="failed", returncode=returncode, log=str(step.log))
            print(f"  FAILED   {step.id}: submission failed; log {step.log}", flush=True)
            return
        write_status(step, state="submitted", job_id=job_id, log=str(step.log),
                     submitted_at=now_utc(), fingerprint=fingerprint(step.source),
                     command=step.argv[1:], gpus=step.gpus, returncode=None)
        print(f"  submitted {step.id} as job {job_id}", flush=True)

    def _pretraining_submits_itself(self, step: Step) -> tuple[str | None, int]:
        """(job id, or None when the submission failed; the command's exit status) of
        ``tools/pretrain.py --slurm``, whose output goes to the step's log."""
        argv = list(step.argv) + ["--slurm", "--nodes", str(step.nodes), "--gpus-per-node",
                                  str(max(step.gpus, 1)), "--timeout-min",
                                  str(self.opt.timeout_min)]
        if self.opt.partition:
            argv += ["--partition", self.opt.partition]
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        with open(step.log, "a") as sink:
            sink.write(out.stdout + out.stderr)
        found = re.search(r"submitted job (\S+)", out.stdout)
        if out.returncode != 0 or not found:
            return None, out.returncode
        return found.group(1), out.returncode

    def _submitit_job(self, step: Step) -> str:
        import submitit

        # the job unpickles run_logged from this repository, wherever sbatch starts it
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if str(ROOT) not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in paths if p])
        executor = submitit.AutoExecutor(folder=str(step.folder / "slurm"),
                                         cluster=self.opt.slurm_cluster)
        gpus = max(step.gpus, 1) if self.opt.slurm_cluster != "local" else step.gpus
        params = dict(name=f"{self.suite_name}:{step.id}", nodes=1, tasks_per_node=1,
                      timeout_min=self.opt.timeout_min,
                      cpus_per_task=max(1, self.opt.cpus_per_gpu * max(step.gpus, 1)))
        if self.opt.slurm_cluster != "local":
            params.update(gpus_per_node=gpus, slurm_partition=self.opt.partition,
                          **self.opt.slurm_extra)
        executor.update_parameters(**params)
        job = executor.submit(run_logged, launch_argv(step), str(step.log), str(ROOT))
        self.submitted[step.id] = (step, job)
        return str(job.job_id)

    def wait(self, after_each=None) -> None:
        """Wait for the jobs this process submitted, record each one's end, then call
        ``after_each()`` (the runner rewrites results.json)."""
        if not self.submitted:
            return
        print(f"waiting for {len(self.submitted)} job(s)", flush=True)
        pending = dict(self.submitted)
        while pending:
            for step_id, (step, job) in list(pending.items()):
                if not job.done():
                    continue
                try:
                    rc, error = job.result(), None
                except Exception as exc:  # the job crashed or was cancelled
                    rc, error = None, f"{type(exc).__name__}: {str(exc)[:300]}"
                state, error = attempt_end(step, rc, error=error)
                write_status(step, state=state, returncode=rc, finished_at=now_utc(),
                             error=error)
                print(f"  {'finished' if state == 'finished' else 'FAILED  '} {step_id}"
                      + ("" if state == "finished" else f": {error}; log {step.log}"),
                      flush=True)
                del pending[step_id]
                if after_each:
                    after_each()
            time.sleep(2)
