#!/usr/bin/env python
"""VICRegL pretraining: one process, torchrun (one or many nodes) or SLURM through submitit.

Examples
  # CPU smoke run on a synthetic dataset (about a minute):
  python tools/pretrain.py --config configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml
  # ResNet-50, 8 GPUs, the official README recipe:
  torchrun --nproc_per_node 8 tools/pretrain.py \\
      --config configs/pretrain/vicregl_resnet50_2x224_100e_in1k.yaml --data-root /datasets
  # 4 nodes x 8 GPUs on SLURM, requeued on preemption, resumes from its checkpoint:
  python tools/pretrain.py --config configs/pretrain/vicregl_resnet50_2x224_300e_in1k.yaml \\
      --slurm --nodes 4 --gpus-per-node 8 --partition learnlab --timeout-min 4320
  # any key can be overridden:
  python tools/pretrain.py --config ... optim.epochs=10 loss.alpha=0.9 run.precision=bf16

A run writes into run.output_dir: checkpoint.pth (resumes automatically when present),
backbone.pth (for transfer), metrics.jsonl, tensorboard/, loss.png and config.json.
"""
import argparse
import json
import sys

import _bootstrap  # noqa: F401

from pretrain.common.arguments import usage_error
from pretrain.common.files import OutputWriteError
from pretrain.common.run_lock import FolderInUseError, LockedCall
from pretrain.common.slurm import Requeueable, add_slurm_args, submit
from pretrain.config import check_pretrain_config, load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="recipe in configs/pretrain/ (named by recipe)")
    parser.add_argument("--data-root", help="data root holding e.g. imagenet/train "
                        "(default: $VICREGL_DATA_ROOT or ./data)")
    parser.add_argument("--output-dir", help="shortcut for run.output_dir=...")
    parser.add_argument("--print-config", action="store_true",
                        help="print the merged config and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="override any config key, e.g. optim.epochs=10 loss.alpha=0.9")
    add_slurm_args(parser, timeout_min=72 * 60)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"run.output_dir={args.output_dir}")
    try:  # unknown keys, wrong types and bad values stop here, before any work
        cfg = load_config(args.config, overrides)
        # a SLURM job's processes are known now; under torchrun, train() checks its own count
        check_pretrain_config(cfg, args.nodes * args.gpus_per_node if args.slurm else 1)
    except (KeyError, TypeError, ValueError, FileNotFoundError) as exc:  # exit 2, as argparse
        usage_error(f"error: {exc.args[0] if exc.args else exc}")
    if args.print_config:
        print(json.dumps(cfg, indent=2))
        return 0
    from pretrain.engine import train

    # one process per run folder (rank 0 of a launcher holds it for all ranks), taken before
    # the checkpoint is read: a second run there would train and log every step twice
    train_locked = LockedCall(train, cfg["run"]["output_dir"], "run.output_dir",
                              "another tools/pretrain.py trains there: wait for it to finish "
                              "(it resumes from its checkpoint), or stop it first")
    if args.slurm:
        submit(Requeueable(train_locked, cfg, args.data_root), args, cfg["run"]["output_dir"],
               cfg["recipe"])
        return 0
    try:
        train_locked(cfg, args.data_root)
    except (OutputWriteError, NotADirectoryError, PermissionError) as exc:
        # a full disk, a read-only or blocked output folder: named, earlier files kept
        raise SystemExit(f"error: {exc.strerror or exc}") from exc
    except FolderInUseError as exc:
        raise SystemExit(f"error: {exc}") from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())
