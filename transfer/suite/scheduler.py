"""Which step of a suite can start now, and why the others cannot.

Before a run, the folders of finished steps asked for again (``--rerun``) and of stale steps
move aside, so they run again (``set_aside_reruns_and_stale``). During it, ``Scheduler.decide``
answers for each waiting step: start it, wait (a step it needs is running), or skip it, saying
why: it is finished, queued or running elsewhere, failed before (``--skip-failed``), or it
cannot start. A step that cannot start gets a verdict, ``blocked`` or ``missing_extra`` with
its reason, kept in ``verdicts``: ``state.step_state`` decides the step's state with them.
"""
import fnmatch
import os
from datetime import datetime

from transfer.suite.options import RunOptions
from transfer.suite.plan import REWRITTEN_KINDS, Plan, Step
from transfer.suite.state import Verdicts, framework_missing, step_state


class Scheduler:
    def __init__(self, plan: Plan, options: RunOptions):
        self.plan, self.opt = plan, options
        self.verdicts: Verdicts = {}  # step id -> (blocked | missing_extra, why)

    def state(self, step: Step) -> tuple[str, str]:
        return step_state(step, self.verdicts)

    def decide(self, step: Step, busy: set[str]) -> str:
        """start | wait (a step it needs is still running: ids in ``busy``) | skip (printed
        why, with a verdict when it cannot start)."""
        state, reason = self.state(step)
        if state == "finished":
            print(f"  done     {step.id}", flush=True)
            return "skip"
        if state in ("queued", "running"):
            print(f"  {state:8s} {step.id}: {reason}", flush=True)
            return "skip"
        if state == "failed" and self.opt.skip_failed:
            print(f"  skipped  {step.id}: failed before ({reason})", flush=True)
            return "skip"
        if any(need in busy for need in step.needs):
            return "wait"
        state, why = self._blocker(step)
        if step.kind == "pretrain" and not self.opt.pretrain:
            state, why = "blocked", (f"pretraining was not asked for (pass --pretrain to run "
                                     f"it, or put its backbone.pth at {step.output})")
        if not why:
            return "start"
        self.verdicts[step.id] = (state, why)
        print(f"  {state:8s} {step.id}: {why}", flush=True)
        return "skip"

    def seed_group(self, step: Step, waiting: list[Step], busy: set[str]) -> list[Step]:
        """``step`` and the other seeds of its row that can start now (taken off
        ``waiting``), when seeds are grouped and the row's tool takes ``--seeds``."""
        if not (self.opt.group_seeds and step.row_argv and step.seed is not None):
            return [step]
        group = [step]
        for other in [s for s in waiting if s.row == step.row]:
            decision = self.decide(other, busy)
            if decision != "wait":
                waiting.remove(other)
            if decision == "start":
                group.append(other)
        return group

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


def set_aside_reruns_and_stale(steps: list[Step], rerun: list[str]) -> None:
    """Folders of finished steps asked for again (``rerun``: id globs) and of stale steps move
    aside; a stale step that derives a file from its backbone's is simply rewritten."""
    for step in steps:
        state, reason = step_state(step)
        forced = any(fnmatch.fnmatchcase(step.id, p) for p in rerun)
        if state == "finished" and forced:
            move_aside(step, "rerun")
        elif state == "stale":
            print(f"  {step.id}: stale ({reason})", flush=True)
            if step.kind not in REWRITTEN_KINDS:
                move_aside(step, "stale")


def move_aside(step: Step, why: str) -> None:
    """Rename the step's folder to ``<name>.<why>-<time>`` (never onto an earlier one)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = step.folder.with_name(f"{step.folder.name}.{why}-{stamp}")
    extra = 1
    while target.exists():  # moved aside twice within one second: never onto the first
        target = step.folder.with_name(f"{step.folder.name}.{why}-{stamp}-{extra}")
        extra += 1
    print(f"  moving {step.folder} aside to {target.name} ({why})", flush=True)
    step.folder.rename(target)
