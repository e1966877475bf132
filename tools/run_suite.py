#!/usr/bin/env python
"""Run a suite: pretraining (when asked), BatchNorm recalibration (recalibrate_bn), conversion,
every transfer experiment, the tables.

A suite (configs/suites/*.yaml) names backbones and experiments; every backbone x experiment is
a row. Each step runs in its own folder under the work dir, writes its log there, and is
skipped once finished, so running the same command again resumes an interrupted suite and
retries what failed. A row with `seeds: N` runs N times (seed0..seedN-1); the tables show
mean, std and N. See docs/suites.md.

Exit status: 0 when nothing failed, was interrupted or blocked; rows that need an optional
extra that is not installed (detectron2) are `missing_extra`, listed, and not a failure.
VICREGL_HIDE_EXTRAS=detectron2 runs everything as if detectron2 were not installed.

Examples:
  # what would run, and what is already done
  python tools/run_suite.py configs/suites/vicregl_resnet50.yaml --data-root /data \\
      --set checkpoints=/ckpt --dry-run
  # everything on this machine, 8 GPUs per experiment (torchrun / detectron2's launcher)
  python tools/run_suite.py configs/suites/vicregl_resnet50.yaml --data-root /data \\
      --set checkpoints=/ckpt --gpus 8 --work-dir work_dirs/suites/r50
  # one row again, alone (a failed one, or --rerun for a finished one)
  python tools/run_suite.py configs/suites/vicregl_resnet50.yaml --data-root /data \\
      --set checkpoints=/ckpt --only 'official_r50_alpha0.75/voc12aug_linear'
  # SLURM: one job per experiment; pretraining submits itself (requeued on timeout);
  # run the same command later to submit what became ready and to collect the results
  python tools/run_suite.py configs/suites/vicregl_resnet50.yaml --data-root /data \\
      --set checkpoints=/ckpt --pretrain --launcher slurm --partition learnlab
  # only rebuild results.json and the tables from what is on disk
  python tools/run_suite.py configs/suites/vicregl_resnet50.yaml --collect-only
"""
import argparse
import shlex
import signal
import sys
from contextlib import ExitStack

import _bootstrap  # noqa: F401

from pretrain.common.arguments import int_at_least, json_object, usage_error
from pretrain.common.data_root import data_root as default_data_root
from pretrain.common.preflight import check_output_dir
from pretrain.common.run_lock import FolderInUseError, folder_lock
from transfer.suite.plan import make_plan, select
from transfer.suite.results import RESULTS_FILE, write_results
from transfer.suite.processes import launch_argv
from transfer.suite.runner import RunOptions, SuiteRunner
from transfer.suite.spec import SuiteError, load_suite
from transfer.suite.state import step_state


def _add_plan_args(parser) -> None:
    """What the plan holds: the suite, its folders and variables, GPU counts, the steps."""
    parser.add_argument("suite", help="a suite file, e.g. configs/suites/vicregl_resnet50.yaml")
    parser.add_argument("--work-dir", help="where every step writes (default "
                        "work_dirs/suites/<suite name>); keep it to resume")
    parser.add_argument("--data-root", help="data root with the frameworks' layouts "
                        "(VOCdevkit/VOC2012, cityscapes, ade/ADEChallengeData2016, coco, VOC2007, "
                        "imagenet); default $VICREGL_DATA_ROOT, else data/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a suite variable, e.g. --set checkpoints=/ckpt (where the official "
                             "and torchvision files are); repeatable")
    parser.add_argument("--gpus", type=int_at_least(0),
                        help="GPUs per experiment, for every experiment "
                        "(default: each experiment's 'gpus'; 0 = CPU). Segmentation keeps the "
                        "protocol's total batch whatever the count")
    parser.add_argument("--pretrain", action="store_true",
                        help="run the suite's pretraining steps (they are long: without this "
                             "flag their backbone.pth must already exist)")
    parser.add_argument("--pretrain-gpus", type=int_at_least(0),
                        help="GPUs per node for pretraining "
                        "(default: the suite's; the recipe's total batch is kept)")
    parser.add_argument("--only", nargs="+", default=[], metavar="GLOB",
                        help="run only these steps (ids as --dry-run lists them, globs allowed: "
                             "'*/voc12aug_linear', 'official_*/*'), plus what they need")
    parser.add_argument("--rerun", nargs="+", default=[], metavar="GLOB",
                        help="run these finished steps again (their folders are moved aside, "
                             "not deleted)")
    parser.add_argument("--skip-failed", action="store_true",
                        help="do not retry steps that failed before (default: retry them)")


def _add_output_args(parser) -> None:
    """What is printed and written: a dry run, the results and tables, the console lines."""
    parser.add_argument("--dry-run", action="store_true",
                        help="print every step, its state and its command; run nothing")
    parser.add_argument("--collect-only", action="store_true",
                        help="rewrite results.json and the tables from the files on disk")
    parser.add_argument("--no-tables", action="store_true",
                        help="do not write WORK_DIR/table/ at the end")
    parser.add_argument("--references", action="store_true",
                        help="tables: add the paper's other models for the same experiments "
                             "(e.g. MoCo v2, supervised) as reference rows")
    parser.add_argument("--stream", action="store_true",
                        help="print every output line of the steps (default: a heartbeat "
                             "line every --heartbeat seconds; everything is in the logs)")
    parser.add_argument("--heartbeat", type=float, default=20.0, metavar="SECONDS")


def _add_launch_args(parser) -> None:
    """Where steps run: this machine (how many at once) or SLURM."""
    slurm = parser.add_argument_group("where steps run")
    slurm.add_argument("--jobs", type=int_at_least(1), default=1,
                       help="steps run at the same time on this machine (CPU runs: each gets "
                            "cores / jobs OpenMP threads unless OMP_NUM_THREADS is set). On "
                            "GPUs keep 1 unless the experiments' GPUs add up to the machine's")
    slurm.add_argument("--group-seeds", action="store_true",
                       help="local: run the ready seeds of a row ('seeds: N') in one process "
                            "(--seeds of seg_train, cls_eval, dense_nn_eval), paying the "
                            "start-up once; worth it on a CPU or with short runs. Without it "
                            "each seed is its own step, so --jobs can run them side by side")
    slurm.add_argument("--launcher", choices=("local", "slurm"), default="local",
                       help="local: on this machine (torchrun for multi-GPU segmentation and "
                            "pretraining, detectron2's own launcher for detection); slurm: "
                            "one job per experiment through submitit")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--timeout-min", type=int_at_least(1), default=24 * 60,
                       help="SLURM time limit per job (experiments resume with --resume when "
                            "submitted again)")
    slurm.add_argument("--cpus-per-gpu", type=int_at_least(1), default=10)
    slurm.add_argument("--slurm-extra", type=json_object, default="{}",
                       help="JSON object of extra submitit parameters, e.g. "
                            "'{\"slurm_constraint\": \"volta32gb\"}'")
    slurm.add_argument("--wait", action="store_true",
                       help="SLURM: wait for the submitted jobs and report their outcome")
    slurm.add_argument("--slurm-cluster", default=None, help=argparse.SUPPRESS)  # tests: local


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_plan_args(parser)
    _add_output_args(parser)
    _add_launch_args(parser)
    return parser.parse_args(argv)


def parse_sets(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        if "=" not in pair:
            usage_error(f"error: --set {pair!r}: expected KEY=VALUE")
        key, value = pair.split("=", 1)
        values[key.strip()] = value
    return values


def retry_hint(argv: list[str]) -> str:
    """This command line without its --only / --rerun arguments, to retry one step."""
    kept, skipping = [], False
    for arg in argv:
        if arg in ("--only", "--rerun"):
            skipping = True
            continue
        if skipping and not arg.startswith("--"):
            continue
        skipping = False
        kept.append(arg)
    return "python tools/run_suite.py " + " ".join(shlex.quote(a) for a in kept)


def print_plan(steps, plan) -> None:
    print(f"suite {plan.suite.name} ({plan.suite.path}); work dir {plan.work_dir}; "
          f"data root {plan.data_root}")
    for step in steps:
        state, reason = step_state(step)
        print(f"{step.id}  [{state}{': ' + reason if reason and state != 'pending' else ''}]")
        print(f"    {' '.join(shlex.quote(a) for a in launch_argv(step))}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        suite = load_suite(args.suite, parse_sets(args.set))
        work_dir = args.work_dir or f"work_dirs/suites/{suite.name}"
        check_output_dir(work_dir, "--work-dir")  # before any step: a file in the way, ...
        plan = make_plan(suite, work_dir, default_data_root(args.data_root), gpus=args.gpus,
                         pretrain_gpus=args.pretrain_gpus)
        steps = select(plan, args.only)
    except SuiteError as exc:  # the suite file or --set: a usage error, exit 2 as argparse's
        usage_error(f"error: {exc}")
    except OSError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if args.dry_run:  # reads the folders only: allowed beside a running suite
        print_plan(steps, plan)
        return 0
    # one runner per work dir, held before any step's state is read: two runners started
    # the same rows at the same time (each read `pending` before the other recorded `running`)
    with ExitStack() as held:
        try:
            held.enter_context(folder_lock(
                plan.work_dir, "--work-dir", "another tools/run_suite.py runs this suite there: "
                "wait for it (--dry-run shows its progress), or stop it and run this command "
                "again to resume"))
        except (FolderInUseError, OSError) as exc:
            raise SystemExit(f"error: {exc}") from exc
        return _run(args, argv, plan, steps)


def _run(args, argv: list[str], plan, steps) -> int:
    """Collect, or run the steps and write the tables (the work dir's lock held)."""
    from transfer.suite.tables import make_tables

    def tables():
        if args.no_tables:
            return
        written = make_tables([plan.work_dir / RESULTS_FILE], plan.work_dir / "table",
                              references=args.references)
        print("tables: " + ", ".join(str(p) for p in written.values()))

    if args.collect_only:
        print(f"wrote {write_results(plan)}")
        tables()
        return 0
    options = RunOptions(
        launcher=args.launcher, jobs=args.jobs, pretrain=args.pretrain, stream=args.stream,
        heartbeat_s=args.heartbeat, skip_failed=args.skip_failed, rerun=args.rerun,
        retry_hint=retry_hint(argv), partition=args.partition, timeout_min=args.timeout_min,
        cpus_per_gpu=args.cpus_per_gpu, slurm_extra=args.slurm_extra,
        slurm_cluster=args.slurm_cluster, wait=args.wait, group_seeds=args.group_seeds)
    # SIGTERM (a scheduler, `kill`) stops the running step the same way Ctrl-C does. SIGINT is
    # set explicitly too: a runner started with SIGINT ignored (a background job of a script,
    # a pytest-xdist worker's child) inherits that, and `kill -INT` then did nothing
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        code = SuiteRunner(plan, steps, options).run()
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    tables()
    return code


if __name__ == "__main__":
    sys.exit(main())
