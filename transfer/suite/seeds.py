"""Seeds of a suite row: the mean, spread and count of a metric over the runs of its head.

The spread is the sample standard deviation (n - 1 in the denominator): the seeds are a sample
of the head's run-to-run variation, and it is what the tables print as "std" and draw as error
bars. One run has no spread (None). No third-party import here.
"""
import math
import statistics


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation) of ``values``; (None, None) for none, std None for one."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else None


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and not math.isnan(value))


def aggregate_metrics(runs: list[dict]) -> tuple[dict, dict]:
    """Per-seed ``metrics`` dicts -> (means, standard deviations), nested like the inputs.
    A metric enters only when every run has a number for it, so a mean is never over a
    subset of the seeds without saying so."""
    means, stds = {}, {}
    keys = list(dict.fromkeys(k for run in runs for k in run))
    for key in keys:
        values = [run.get(key) for run in runs]
        if all(isinstance(v, dict) for v in values):
            means[key], stds[key] = aggregate_metrics(values)
        elif all(_is_number(v) for v in values):
            means[key], stds[key] = mean_std([float(v) for v in values])
    return means, stds


# When a row's seeds disagree, the row shows the state that needs attention first.
STATE_PRIORITY = ("failed", "interrupted", "stale", "blocked", "missing_extra", "running",
                  "queued", "pending")


def row_state(states: list[tuple[str, str]]) -> tuple[str, str]:
    """The (state, reason) of a seeded row from its seeds' (state, reason), in seed order:
    finished when all are, else the most pressing one, its reason prefixed by its seed."""
    if all(state == "finished" for state, _ in states):
        return "finished", ""
    finished = sum(state == "finished" for state, _ in states)
    for wanted in STATE_PRIORITY + tuple(s for s, _ in states):
        for k, (state, reason) in enumerate(states):
            if state == wanted:
                detail = f"seed{k}: {reason}" if reason else f"seed{k}"
                return state, f"{detail}; {finished} of {len(states)} seeds finished"
    raise AssertionError("unreachable")
