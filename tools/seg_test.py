#!/usr/bin/env python
"""Evaluate a trained segmentation checkpoint and write metrics.json.

Loads the checkpoint strictly (every model tensor must be in it) and evaluates the config's
test set (the validation split for VOC aug, Cityscapes and ADE20k), one process, torchrun or
SLURM. Writes WORK_DIR/metrics.json (mIoU, mAcc, aAcc, per-class IoU); the backbone entry
comes from the seg_run.json of the training work dir that holds the checkpoint.

mmengine checkpoints pickle numpy objects: they are loaded with weights_only plus an exact
allow-list, and only from a work dir written by tools/seg_train.py (see
transfer/mmseg_side/runner.py).

Examples:
  python tools/seg_test.py configs/segmentation/linear_resnet50_voc12aug_40k.py \\
      work_dirs/linear_r50_voc/iter_40000.pth --data-root data
  torchrun --nproc_per_node 8 tools/seg_test.py CONFIG CKPT --launcher pytorch
"""
import argparse
import json
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from mmengine.config import Config, DictAction

from pretrain.common.preflight import check_output_dir
from transfer.datasets import add_data_root_arg
from transfer.mmseg_side import overrides
from transfer.mmseg_side.layouts import check_dataset

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the experiment config the checkpoint was trained with")
    parser.add_argument("checkpoint", help="a checkpoint written by tools/seg_train.py")
    add_data_root_arg(parser, "the datasets")
    parser.add_argument("--work-dir", help="where logs and metrics.json go "
                                           "(default: <checkpoint dir>/test_<checkpoint name>)")
    parser.add_argument("--launcher", choices=("none", "pytorch", "slurm", "mpi"),
                        default="none", help="none: one process; pytorch: torchrun; slurm: srun")
    parser.add_argument("--crop-size", type=int,
                        help="the --crop-size the checkpoint was trained with (tests, demos)")
    parser.add_argument("--num-workers", type=int, help="dataloader workers per process")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="final config edits key=value")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        overrides.check_arguments(None, None, args.crop_size, args.num_workers)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise SystemExit(f"checkpoint {checkpoint} does not exist")
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or str(checkpoint.parent / f"test_{checkpoint.stem}")
    overrides.set_data_root(cfg, args.data_root)
    cfg.model.backbone.init_cfg = None  # every weight comes from the trained checkpoint
    cfg.custom_hooks = [h for h in cfg.get("custom_hooks", [])
                        if h.get("type") != "VerifyPretrainedHook"]
    if args.crop_size:
        overrides.set_crop_size(cfg, args.crop_size)
    if args.num_workers is not None:
        overrides.set_num_workers(cfg, args.num_workers)
    cfg.load_from = str(checkpoint)
    cfg.resume = False
    cfg.merge_from_dict(args.cfg_options)
    from transfer.mmseg_side.runner import (RUN_MARKER, SegRunner, check_trained_checkpoint,
                                            find_metric, metrics_record, run_dir_of,
                                            write_seg_metrics)

    run_dir = run_dir_of(checkpoint)
    if (Path(cfg.work_dir) / RUN_MARKER).is_file():
        raise SystemExit(f"--work-dir {cfg.work_dir} is a seg_train work dir (it holds "
                         f"{RUN_MARKER}): testing into it would replace the training run's "
                         "metrics.json; expected another folder (default: "
                         "<checkpoint dir>/test_<checkpoint name>)")
    try:  # names every missing or malformed file, before a model is built
        check_output_dir(cfg.work_dir, "--work-dir")
        print(check_dataset(cfg.dataset_name, args.data_root))
        check_trained_checkpoint(checkpoint, run_dir)
    except (ValueError, OSError) as exc:
        raise SystemExit(str(exc)) from exc

    from mmengine.dist import is_main_process

    runner = SegRunner.from_cfg(cfg)
    runner.trusted_dir = str(run_dir) if run_dir else None
    start = time.time()
    runner.test()
    if is_main_process():
        metric = find_metric(runner.test_loop.evaluator)
        backbone = {"arch": "unknown", "source": "unknown", "sha256": ""}
        if run_dir:
            backbone = json.loads((run_dir / RUN_MARKER).read_text())["backbone"]
        world = overrides.world_size(args.launcher)
        metrics, per_class_acc = metrics_record(metric)
        path = write_seg_metrics(cfg.work_dir, cfg, args.config, backbone, metrics,
                                 time.time() - start, world, extra={
                                     "per_class_acc": per_class_acc, "checkpoint": str(checkpoint),
                                     "log_dir": runner.log_dir})
        print(f"mIoU {metric.summary['mIoU']:.2f}, mAcc {metric.summary['mAcc']:.2f}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
