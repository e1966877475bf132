"""``WORK_DIR/results.json``: one row per backbone x experiment with its state (decided by
``state.step_state``), metrics, cost and protocol fingerprint (a seeded row: the mean and std
over its seeds, each seed's record kept), and the pretraining steps; read from the files on
disk, rewritten atomically after every step, and what tools/make_table.py reads.
"""
import sys
from pathlib import Path

from pretrain.common.files import write_json
from transfer.suite.plan import Plan, Step
from transfer.suite.seeds import aggregate_metrics, row_state
from transfer.suite.state import Verdicts, step_state
from transfer.suite.status_file import now_utc, read_status

RESULTS_FILE = "results.json"


def _numbers(metrics: dict) -> dict:
    """metrics.json ``metrics`` without the per-class tables (kept in the file itself)."""
    return {k: _numbers(v) if isinstance(v, dict) else v for k, v in metrics.items()
            if k != "per_class"}


def _step_record(step: Step, verdicts: Verdicts) -> dict:
    """One step's state (``state.step_state``), metrics, cost and protocol fingerprint, from
    the files on disk."""
    from transfer.metrics import read_metrics

    state, reason = step_state(step, verdicts)
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


def _row(steps: list[Step], verdicts: Verdicts) -> dict:
    step = steps[0]
    exp, bb = step.experiment, step.backbone
    row = {"id": step.row, "backbone": bb.name, "backbone_label": bb.label, "arch": bb.arch,
           "source": step.source, "paper_models": bb.paper, "experiment": exp.name,
           "experiment_label": exp.label, "paper_experiment": exp.paper, "task": exp.task,
           "task_protocol": exp.protocol or None, "metric": exp.metric,
           "metrics_shown": [exp.metric] + exp.metrics}
    records = [_step_record(s, verdicts) for s in steps]
    if step.seed is None:
        record = records[0]
        del record["id"], record["seed"]
        finished = record["status"] == "finished"
        row.update(record, metrics_std=None, n_seeds=int(finished), seeds_planned=1, seeds=None)
    else:
        row.update(_seeded_row(records))
    return row


def collect(plan: Plan, verdicts: Verdicts | None = None) -> dict:
    """Everything the tables need, from the files on disk: one row per backbone x experiment
    (a seeded row holds its seeds), the pretraining steps. ``verdicts``: the runner's, during a
    run (why it did not start a step)."""
    from pretrain.common.provenance import git_sha

    verdicts = verdicts or {}
    grouped: dict[str, list[Step]] = {}
    for step in plan.rows:
        grouped.setdefault(step.row, []).append(step)
    rows = [_row(steps, verdicts) for steps in grouped.values()]
    pretraining = []
    for step in plan.steps:
        if step.kind != "pretrain":
            continue
        status = read_status(step)
        state, _ = step_state(step, verdicts)
        wall, gpus = status.get("wall_s"), status.get("gpus", step.gpus)
        pretraining.append({
            "backbone": step.backbone.name, "status": state, "folder": str(step.folder),
            "wall_s": wall, "gpus": gpus, "gpu_type": status.get("gpu_type"),
            "gpu_hours": round(wall * gpus / 3600, 3) if wall is not None and gpus else 0.0,
            "job_id": status.get("job_id")})
    return {"suite": plan.suite.name, "suite_file": str(plan.suite.path),
            "paper_results": str(plan.suite.paper_results), "work_dir": str(plan.work_dir),
            "data_root": str(plan.data_root), "collected_at": now_utc(), "git_sha": git_sha(),
            "python": sys.executable, "rows": rows, "pretraining": pretraining}


def write_results(plan: Plan, verdicts: Verdicts | None = None) -> Path:
    """Rewrite ``WORK_DIR/results.json`` from the files on disk, atomically (a concurrent
    reader, such as the demo's progress line or make_table, never sees half a file)."""
    path = plan.work_dir / RESULTS_FILE
    write_json(path, collect(plan, verdicts))
    return path
