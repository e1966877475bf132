"""What a suite run prints around its steps: the line announcing each step (or group of one
row's seeds) with its place in the run and its log, and the summary at the end, whose exit
status is 0 when nothing failed, was interrupted or blocked (``missing_extra`` rows are listed
but are not failures). The states come from ``state.step_state``.
"""
from pathlib import Path

from pretrain.common.durations import duration
from transfer.suite.plan import Step
from transfer.suite.processes import group_log

FAILURES = ("failed", "interrupted", "blocked")


def announce(group: list[Step], index: int, total: int) -> None:
    """``[index/total] id (kind, where it runs); log ...`` for a step or one row's seeds."""
    step = group[0]
    name = step.id if len(group) == 1 else (
        f"{step.row}/seed{{{','.join(str(s.seed) for s in group)}}} in one process")
    print(f"[{index}/{total}] {name} ({step.kind}, {where(step)}); log {group_log(group)}",
          flush=True)


def where(step: Step) -> str:
    return f"{step.gpus} GPU" + ("s" if step.gpus != 1 else "") if step.gpus else "cpu"


def summary(suite_name: str, states: list[tuple[Step, str, str]], results: Path, wall: float,
            retry_hint: str = "") -> int:
    """Print the counts and every step that did not finish (``states``: each step's state and
    reason); returns the exit status."""
    counts: dict[str, int] = {}
    failed, missing = [], []
    for step, state, reason in states:
        counts[state] = counts.get(state, 0) + 1
        if state in FAILURES:
            failed.append((step, state, reason))
        elif state == "missing_extra":
            missing.append((step, state, reason))
    print(f"suite {suite_name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f" ({duration(wall)}); results in {results}", flush=True)
    for step, state, reason in failed + missing:
        print(f"  {state}: {step.id}: {reason}", flush=True)
        if state in ("failed", "interrupted") and retry_hint:
            print(f"    retry alone: {retry_hint} --only '{step.id}'", flush=True)
    if missing and not failed:
        print(f"  {len(missing)} row(s) need an optional extra that is not installed here: "
              "not a failure (exit status 0)", flush=True)
    return 1 if failed else 0
