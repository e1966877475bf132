"""Overall progress and ETA of a suite run, read from the steps' files on disk.

The suite runner prints each step's own progress (start, heartbeat, end); this adds one line for
the whole run: steps done / to do, what runs, elapsed time and an estimate of the time left.
The estimate: each step kind (pretrain, recalibrate, or the experiment's task) is expected to
take the mean wall time of its finished steps (this run's or an earlier run's, from
``suite_status.json``), or a prior given by the caller before any has finished; a running step
has its expected time minus its elapsed time left; the work left is shared by ``jobs`` workers
but never finishes before its longest step. Rough by design; it improves as steps finish.
"""
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from pretrain.common.durations import duration
from transfer.suite.plan import Step
from transfer.suite.state import step_state
from transfer.suite.status_file import read_status

# states that will not run in this run (finished, failed before, or unable to start: a missing
# framework is one of them, state.step_state); interrupted, stale and pending steps will
DONE_STATES = ("finished", "failed", "blocked", "missing_extra")


@dataclass(frozen=True)
class Timing:
    """What the ETA needs of one step."""
    kind: str  # pretrain | recalibrate | the experiment's task
    state: str  # finished | running | todo | done-without-result (failed, missing extra...)
    elapsed: float = 0.0  # running: seconds since it started
    wall: float | None = None  # finished: its measured wall time


def step_kind(step: Step) -> str:
    return step.experiment.task if step.experiment is not None else step.kind


def expected_durations(timings: list[Timing], priors: dict[str, float]) -> dict[str, float]:
    """Mean measured wall time per kind; the prior where nothing of that kind finished yet."""
    walls: dict[str, list[float]] = {}
    for t in timings:
        if t.state == "finished" and t.wall is not None:
            walls.setdefault(t.kind, []).append(t.wall)
    expected = dict(priors)
    expected.update({kind: sum(v) / len(v) for kind, v in walls.items()})
    return expected


def eta_seconds(timings: list[Timing], expected: dict[str, float], jobs: int,
                default: float = 30.0) -> float:
    """Seconds left: the remaining work over ``jobs`` workers, at least its longest step. A
    running step that overran its expectation is given a tenth of it again."""
    left = []
    for t in timings:
        guess = expected.get(t.kind, default)
        if t.state == "running":
            left.append(max(guess - t.elapsed, 0.1 * guess))
        elif t.state == "todo":
            left.append(guess)
    if not left:
        return 0.0
    return max(sum(left) / max(1, jobs), max(left))


def progress_line(timings: list[Timing], running: list[str], expected: dict[str, float],
                  jobs: int, elapsed: float) -> str:
    """``[demo] 12/40 steps done, running: a, b; elapsed 3m10s, ETA ~5m20s``."""
    done = sum(t.state not in ("running", "todo") for t in timings)
    shown = ", ".join(running[:3]) + (f" (+{len(running) - 3})" if len(running) > 3 else "")
    return (f"[demo] {done}/{len(timings)} steps done" + (f", running: {shown}" if shown else "")
            + f"; elapsed {duration(elapsed)}, ETA ~{duration(eta_seconds(timings, expected, jobs))}")


def _started(status: dict) -> float | None:
    try:
        return datetime.fromisoformat(status["started_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def read_timing(step: Step) -> Timing:
    """The step's Timing from its state (``state.step_state``) and its files."""
    state, _ = step_state(step)
    status = read_status(step)
    kind = step_kind(step)
    if state == "finished":
        return Timing(kind, "finished", wall=status.get("wall_s"))
    if state == "running":
        start = _started(status)
        return Timing(kind, "running", elapsed=time.time() - start if start else 0.0)
    if state in DONE_STATES:
        return Timing(kind, "done")
    return Timing(kind, "todo")


class ProgressMonitor:
    """Prints ``progress_line`` every ``every`` seconds while a suite runs (a daemon thread)."""

    def __init__(self, steps: list[Step], priors: dict[str, float], jobs: int, every: float,
                 printer=print):
        self.steps, self.priors, self.jobs, self.every = steps, priors, jobs, every
        self.printer = printer
        self.start = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def line(self) -> str:
        timings = [read_timing(s) for s in self.steps]
        running = [s.id for s, t in zip(self.steps, timings) if t.state == "running"]
        expected = expected_durations(timings, self.priors)
        return progress_line(timings, running, expected, self.jobs, time.time() - self.start)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.printer(self.line(), flush=True)
            except (OSError, ValueError) as exc:  # a status file being replaced: next time
                self.printer(f"[demo] progress unavailable this time ({exc})", flush=True)

    def __enter__(self):
        self.printer(self.line(), flush=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
