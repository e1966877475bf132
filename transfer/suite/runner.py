"""Run a suite's plan (``plan.py``): resumable, on this machine or on SLURM.

The run, in order: the folders of reruns and stale steps move aside; then, until no step is
left, the scheduler (``scheduler.py``) says which waiting step can start, and the runner hands
it to a launcher: on this machine up to ``--jobs`` at once (``launch_local.py``), or to SLURM
(``launch_slurm.py``); after every step ``WORK_DIR/results.json`` is rewritten
(``results.py``); at the end the summary (``report.py``) gives the exit status: 1 for failed,
interrupted and blocked steps, 0 when the only ones left are ``missing_extra``.

Every step's state comes from ``state.step_state`` (its files, its process, the scheduler's
verdicts), so running the same plan again resumes it. The output of every step goes to
``suite.log`` in its folder; the console gets one status line per step and a heartbeat
(elapsed time and the log's last line) while it runs.
"""
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from transfer.suite import report
from transfer.suite.launch_local import LocalLauncher
from transfer.suite.launch_slurm import SlurmLauncher
from transfer.suite.options import RunOptions
from transfer.suite.plan import Plan, Step
from transfer.suite.results import write_results
from transfer.suite.scheduler import Scheduler, set_aside_reruns_and_stale
from transfer.suite.state import step_state

__all__ = ["RunOptions", "SuiteRunner"]


class SuiteRunner:
    def __init__(self, plan: Plan, steps: list[Step], options: RunOptions):
        self.plan, self.steps, self.opt = plan, steps, options
        self.scheduler = Scheduler(plan, options)
        self.local = LocalLauncher(options)
        self.slurm = SlurmLauncher(plan.suite.name, options)
        self.index = self.total = 0

    def write_results(self) -> Path:
        return write_results(self.plan, self.scheduler.verdicts)

    def run(self) -> int:
        set_aside_reruns_and_stale(self.steps, self.opt.rerun)
        self.total = sum(1 for s in self.steps if step_state(s)[0] != "finished")
        print(f"suite {self.plan.suite.name}: {len(self.steps)} steps, "
              f"{len(self.steps) - self.total} already finished, work dir {self.plan.work_dir}",
              flush=True)
        started = time.time()
        waiting = list(self.steps)
        running: dict = {}  # future -> step
        pool = ThreadPoolExecutor(max_workers=max(1, self.opt.jobs))
        try:
            while waiting or running:
                self._start_what_can(waiting, running, pool)
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
            self.local.stop_all()
            pool.shutdown(wait=True)
            self.write_results()
            raise
        pool.shutdown(wait=True)
        if self.opt.wait:
            self.slurm.wait(after_each=self.write_results)
        path = self.write_results()
        states = [(s, *self.scheduler.state(s)) for s in self.steps]
        return report.summary(self.plan.suite.name, states, path, time.time() - started,
                              self.opt.retry_hint)

    def _start_what_can(self, waiting: list[Step], running: dict, pool) -> None:
        """Take every waiting step the scheduler lets start, while a worker is free: to SLURM
        (conversion stays here), or to a worker thread here (with its row's ready seeds when
        they are grouped)."""
        for step in list(waiting):
            if len(running) >= max(1, self.opt.jobs):
                break
            if step not in waiting:  # started with an earlier seed of its row
                continue
            busy = {s.id for s in running.values()}
            decision = self.scheduler.decide(step, busy)
            if decision == "wait":
                continue
            waiting.remove(step)
            if decision != "start":
                continue
            if self.opt.launcher == "slurm":
                self._announce([step])
                self.slurm.submit(step)
                self.write_results()
            else:
                group = self.scheduler.seed_group(step, waiting, busy)
                self._announce(group)
                running[pool.submit(self.local.run, group)] = step

    def _announce(self, group: list[Step]) -> None:
        self.index += len(group)
        report.announce(group, self.index, self.total)
