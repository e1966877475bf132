"""Did the demo reach the paper's ordering? Verdicts from a suite's results, seed spread included.

Two claims, judged on every task of the demo's numbers:

- the pretraining learns: VICReg > random init and VICRegL > random init, on every task
  (dense and global);
- the paper's trade-off (VICRegL paper): features trained with the local criterion are better
  for dense tasks and the global criterion alone is better (or as good) for global ones:
  VICRegL > VICReg on every dense task (segmentation, dense retrieval), VICReg >= VICRegL on
  the global task (classification). A task's ordering is reached when both its claims hold
  (dense: VICRegL > VICReg > random init).

The rule that decides whether a difference counts (``SPREAD_FACTOR``): a difference between two
rows counts when it exceeds twice the larger of the two rows' seed standard deviations (sample
std over the seeds of the evaluation head). A row with a single seed has no measured spread:
its differences are reported with "spread unknown" and never count. The spread is that of the
evaluation head (its seed); each backbone is one pretraining run, whose own run-to-run spread is
not measured here. Pure functions: no files, no frameworks.
"""
import math
from dataclasses import dataclass

from transfer.suite.tables import metric_value

SPREAD_FACTOR = 2.0
DENSE_TASKS = ("segmentation", "dense_retrieval")
GLOBAL_TASKS = ("classification",)
RULE = (f"a difference counts when it exceeds {SPREAD_FACTOR:g} x the larger seed std of the "
        "two rows (std over the seeds of the evaluation head; one pretraining per backbone)")


@dataclass(frozen=True)
class Score:
    """One (backbone, experiment): its main metric over the finished seeds."""
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1); None with a single seed."""
        if self.n < 2:
            return None
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))

    def text(self) -> str:
        spread = "" if self.std is None else f" +- {self.std:.2f}"
        return f"{self.mean:.1f}{spread} (n={self.n})"


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: the claim is ``a > b`` (strict) or ``a >= b`` (``strict=False``)."""
    a: str
    b: str
    diff: float  # mean(a) - mean(b)
    spread: float | None  # SPREAD_FACTOR x max(std a, std b); None when a row has one seed
    strict: bool = True

    @property
    def exceeds(self) -> bool:
        """Whether |diff| is beyond the spread (never, when the spread is unknown)."""
        return self.spread is not None and abs(self.diff) > self.spread

    @property
    def holds(self) -> bool:
        """Strict: ``a`` ahead beyond the spread. Not strict: ``b`` not ahead beyond it
        (a tie within the spread is consistent with ``a >= b``)."""
        if self.strict:
            return self.exceeds and self.diff > 0
        return self.diff >= 0 or not self.exceeds

    def text(self, labels: dict[str, str]) -> str:
        sign = ">" if self.strict else ">="
        spread = "spread unknown (one seed)" if self.spread is None else (
            f"{'exceeds' if self.exceeds else 'within'} the spread {self.spread:.2f}")
        return (f"{labels.get(self.a, self.a)} {sign} {labels.get(self.b, self.b)}: "
                f"difference {self.diff:+.2f}, {spread} -> "
                f"{'holds' if self.holds else 'does not hold'}")


def seed_records(row: dict) -> list[dict]:
    """The per-seed records of a results.json row (its ``seeds`` list), or the row itself when
    it has a single, unseeded run. Each has ``status`` and ``metrics``."""
    return row.get("seeds") or [row]


def not_finished(rows: list[dict], selected: set[str]) -> list[str]:
    """Ids of the ``selected`` steps (a seed of a row, or an unseeded row) that neither
    finished nor only lack an optional extra (status ``missing_extra``): the demo's failures."""
    return [r["id"] for row in rows for r in seed_records(row)
            if r["id"] in selected and r["status"] not in ("finished", "missing_extra")]


def seed_scores(rows: list[dict]) -> dict[tuple[str, str], Score]:
    """The finished seeds of each (backbone, experiment) of results.json ``rows``: one value
    per seed (the experiment's main metric); unfinished seeds and seeds without it are left
    out."""
    grouped: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        for record in seed_records(row):
            if record.get("status") != "finished":
                continue
            value = metric_value(record.get("metrics"), row["metric"])
            if value is not None:
                grouped.setdefault((row["backbone"], row["experiment"]), []).append(value)
    return {key: Score(tuple(values)) for key, values in grouped.items()}


def compare(a: str, b: str, score_a: Score, score_b: Score, strict: bool = True) -> Comparison:
    """The claim ``a > b`` (or ``a >= b``) on two scores, with the spread rule of the module."""
    stds = [s.std for s in (score_a, score_b)]
    spread = None if None in stds else SPREAD_FACTOR * max(stds)
    return Comparison(a, b, score_a.mean - score_b.mean, spread, strict)


@dataclass(frozen=True)
class TaskVerdict:
    experiment: str
    label: str
    metric: str
    dense: bool
    scores: dict[str, Score]  # backbone -> score; absent when the row has no result
    # dense: [local > global_, global_ > floor, local > floor]; global: [global_ >= local,
    # global_ > floor, local > floor]; empty when a score is missing
    comparisons: list[Comparison]

    @property
    def complete(self) -> bool:
        return bool(self.comparisons)

    @property
    def trade_off(self) -> Comparison | None:
        """The paper's local-vs-global claim on this task."""
        return self.comparisons[0] if self.complete else None

    @property
    def learns(self) -> bool:
        """Both pretrained backbones beat random init beyond the spread."""
        return self.complete and all(c.holds for c in self.comparisons[1:])

    @property
    def reached(self) -> bool:
        """Dense: local > global_ > floor. Global: global_ >= local (and both > floor)."""
        return self.complete and all(c.holds for c in self.comparisons)


def task_verdict(experiment: str, label: str, metric: str, dense: bool,
                 scores: dict[str, Score], local: str, global_: str,
                 floor: str) -> TaskVerdict:
    """The trade-off claim first (dense: local > global_; global: global_ >= local), then
    global_ > floor and local > floor."""
    first = (local, global_, True) if dense else (global_, local, False)
    chain = [first, (global_, floor, True), (local, floor, True)]
    comparisons = []
    if {local, global_, floor} <= set(scores):
        comparisons = [compare(a, b, scores[a], scores[b], strict) for a, b, strict in chain]
    return TaskVerdict(experiment, label, metric, dense, scores, comparisons)


def verdicts(rows: list[dict], local: str = "vicregl", global_: str = "vicreg",
             floor: str = "random") -> list[TaskVerdict]:
    """One verdict per dense and global experiment of results.json ``rows``, in their order."""
    scores = seed_scores(rows)
    out, seen = [], set()
    for row in rows:
        task, exp = row.get("task"), row["experiment"]
        if exp in seen or task not in DENSE_TASKS + GLOBAL_TASKS:
            continue
        seen.add(exp)
        found = {bb: s for (bb, e), s in scores.items() if e == exp}
        out.append(task_verdict(exp, row.get("experiment_label") or exp, row["metric"],
                                task in DENSE_TASKS, found, local, global_, floor))
    return out


def verdict_lines(results: list[TaskVerdict], labels: dict[str, str]) -> list[str]:
    """The per-task report: scores, each claimed pair, and whether the ordering holds."""
    lines = []
    for v in results:
        claim = "dense" if v.dense else "global"
        scores = "; ".join(f"{labels.get(bb, bb)} {s.text()}" for bb, s in v.scores.items())
        lines.append(f"{v.label} ({claim}, {v.metric}): {scores or 'no finished seed'}")
        if not v.complete:
            lines.append("    no verdict: a backbone has no finished result for this task")
            continue
        lines += [f"    {c.text(labels)}" for c in v.comparisons]
        lines.append(f"    pretrained > random init {'HOLDS' if v.learns else 'does not hold'}; "
                     f"ordering {'REACHED' if v.reached else 'not reached'}")
    return lines


def summary(results: list[TaskVerdict], labels: dict[str, str], local: str = "vicregl",
            global_: str = "vicreg", floor: str = "random") -> str:
    """One honest sentence per claim: on how many tasks it holds."""
    name = lambda bb: labels.get(bb, bb)  # noqa: E731
    complete = [v for v in results if v.complete]
    if not results:
        return "no dense or global task has results."
    learns = [v.label for v in complete if v.learns]
    parts = [f"{name(global_)} and {name(local)} > {name(floor)} on {len(learns)} of "
             f"{len(complete)} task(s)"]
    for dense, claim in ((True, f"{name(local)} > {name(global_)} > {name(floor)}"),
                         (False, f"{name(global_)} >= {name(local)}")):
        group = [v for v in results if v.dense == dense]
        if not group:
            continue
        done = [v for v in group if v.complete]
        reached = [v.label for v in done if v.reached]
        text = (f"{claim} reached on {len(reached)} of {len(done)} "
                f"{'dense' if dense else 'global'} task(s)")
        if reached:
            text += f" ({', '.join(reached)})"
        if len(done) < len(group):
            text += f"; {len(group) - len(done)} without results"
        parts.append(text)
    return "; ".join(parts) + "."
