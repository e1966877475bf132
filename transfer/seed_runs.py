"""Several seeds of one evaluation in one process: ``WORK_DIR/seed<k>/metrics.json`` each.

A seed's spread is only worth measuring when it is cheap: on a small machine each process
pays its start-up (imports, dataset index, backbone) again, which can cost more than the
evaluation itself. With ``--seeds 0 1 2`` the evaluation tools pay it once. Each seed's
metrics.json is written as soon as that seed is done, and a rerun skips the seeds whose
metrics.json is complete, so a killed run loses one seed at most. The folders are the ones a
suite's ``seeds: N`` gives its steps, so the tables read them unchanged. No torch here.
"""
import argparse
from pathlib import Path

from pretrain.common.arguments import seed as seed_value
from transfer.metrics import read_metrics


def add_seed_args(parser: argparse.ArgumentParser, what: str) -> None:
    """``--seed S`` (one run in WORK_DIR) or ``--seeds S [S ...]`` (WORK_DIR/seed<S> each)."""
    group = parser.add_mutually_exclusive_group()
    # default None, not 0: argparse would let an explicit '--seed 0' pass beside --seeds
    group.add_argument("--seed", type=seed_value, default=None,
                       help=f"random seed of {what} (default 0); the run writes "
                            "WORK_DIR/metrics.json")
    group.add_argument("--seeds", type=seed_value, nargs="+", metavar="S",
                       help="several seeds in this one process (start-up paid once): seed S "
                            "writes WORK_DIR/seed<S>/metrics.json; a rerun skips the seeds "
                            "already finished")


def seed_dir(work_dir: str | Path, seed: int) -> Path:
    return Path(work_dir) / f"seed{seed}"


def finished(metrics_json: Path) -> bool:
    try:
        read_metrics(metrics_json)
    except ValueError:  # absent, torn, or not a complete record: the seed runs again
        return False
    return True


def planned_runs(work_dir: str | Path, seed: int | None, seeds: list[int] | None
                 ) -> list[tuple[int, Path]]:
    """(seed, work dir) of every run still to do: ``--seed`` (default 0) always runs (its
    caller asked for it), each of ``--seeds`` unless its metrics.json is complete."""
    if not seeds:
        return [(seed or 0, Path(work_dir))]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {' '.join(map(str, seeds))}: each seed once")
    runs = []
    for s in seeds:
        folder = seed_dir(work_dir, s)
        if finished(folder / "metrics.json"):
            print(f"seed {s}: {folder / 'metrics.json'} is complete, skipped")
        else:
            runs.append((s, folder))
    return runs


def print_results(name: str, results: dict[int, dict], work_dir: str | Path,
                  seeds: list[int] | None, keys: tuple[str, ...]) -> None:
    """One line per seed run: ``name seed S: key value, ... -> its metrics.json``."""
    for seed, metrics in results.items():
        where = seed_dir(work_dir, seed) if seeds else Path(work_dir)
        shown = ", ".join(f"{key} {metrics[key]:.2f}" for key in keys)
        print(f"{name} seed {seed}: {shown} -> {where / 'metrics.json'}")
