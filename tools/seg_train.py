#!/usr/bin/env python
"""Train a segmentation transfer experiment with MMSegmentation 1.x (mmengine's Runner).

One process, torchrun or SLURM; the backbone, data root and GPU count are arguments, the
protocol is the config. Before building anything it checks the dataset layout and reads
--backbone once, strictly, as the architecture the config builds (any source of
transfer/weights.py), and converts it into the work dir (WORK_DIR/backbone_<arch>.pth, key map
in the log), which the backbone's Pretrained init loads; before the first iteration the
config's VerifyPretrainedHook checks the backbone holds exactly the weights that were read. At
the end it writes WORK_DIR/metrics.json from the final validation (mIoU, mAcc, aAcc, per-class
IoU).

Examples:
  # one process (GPU if present, else CPU)
  python tools/seg_train.py configs/segmentation/linear_resnet50_voc12aug_40k.py \\
      --backbone runs/r50/backbone.pth --data-root data --work-dir work_dirs/linear_r50_voc
  # 8 GPUs on one machine (total batch 16 -> 2 per GPU)
  torchrun --nproc_per_node 8 tools/seg_train.py CONFIG --launcher pytorch --backbone B
  # SLURM, one task per GPU; requeue with the same command plus --resume
  srun -N 2 --ntasks-per-node 4 --gpus-per-task 1 python tools/seg_train.py CONFIG \\
      --launcher slurm --backbone B --work-dir W --resume
  # three seeds of the head in one process (start-up and the backbone read paid once):
  # W/seed0, W/seed1, W/seed2; the same command again skips the finished seeds (add --resume
  # to continue a killed one)
  python tools/seg_train.py CONFIG --backbone B --work-dir W --seeds 0 1 2
  # CPU smoke run on the synthetic data: 20 iterations of 64-pixel crops, random init
  python tools/seg_train.py configs/segmentation/linear_convnext_small_voc12aug_40k.py \\
      --backbone random:0 --data-root /tmp/synth --max-iters 20 --crop-size 64 \\
      --total-batch 4 --num-workers 0 \\
      --cfg-options model.backbone.arch=convnext_mini \\
      "model.decode_head.in_channels=[16,32,64,128]"
"""
import argparse
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from mmengine.config import Config, DictAction

from pretrain.common.arguments import add_backbone_arg
from pretrain.common.preflight import check_output_dir
from transfer.conversion import Converted, convert_into
from transfer.datasets import add_data_root_arg
from transfer.mmseg_side import overrides
from transfer.mmseg_side.checkpoint import arch_of_backbone_cfg
from transfer.mmseg_side.layouts import check_dataset
from transfer.seed_runs import add_seed_args, planned_runs

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="an experiment of configs/segmentation/")
    add_backbone_arg(parser)
    add_data_root_arg(parser, "VOCdevkit/VOC2012, cityscapes, ade/ADEChallengeData2016")
    parser.add_argument("--work-dir", help="logs, checkpoints, metrics.json "
                                           "(default runs/segmentation/<config name>)")
    parser.add_argument("--launcher", choices=("none", "pytorch", "slurm", "mpi"),
                        default="none", help="none: one process; pytorch: under torchrun; "
                                             "slurm: under srun, one task per GPU")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="resume: without a value from the latest checkpoint of the work "
                             "dir (starting fresh if there is none, so a requeued job can "
                             "always pass it), or from the given checkpoint")
    parser.add_argument("--total-batch", type=int,
                        help="images per iteration over all GPUs (default: the protocol's, 16 "
                             "for most); the per-GPU batch is this / number of processes")
    parser.add_argument("--max-iters", type=int,
                        help="shorten the schedule (warm-up, decay, validation and checkpoint "
                             "intervals scale with it); for tests and demos, not for results")
    parser.add_argument("--crop-size", type=int,
                        help="scale every input size so the crop's short side is this (e.g. 64 "
                             "with 64-pixel synthetic images); for tests and demos")
    parser.add_argument("--num-workers", type=int,
                        help="dataloader workers per process (0 loads in the main process)")
    add_seed_args(parser, "the head's initialisation, the data order and the augmentation "
                          "(recorded in metrics.json settings)")
    parser.add_argument("--deterministic", action="store_true",
                        help="cuDNN deterministic algorithms, benchmark off: the same seed "
                             "then gives the same number on a GPU, at some speed cost (no "
                             "effect on the CPU, which is deterministic already)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="final config edits key=value, e.g. train_cfg.val_interval=1000 "
                             "or model.backbone.arch=convnext_mini")
    return parser.parse_args(argv)


def build_config(args, seed: int, work_dir: str) -> tuple[Config, dict]:
    try:
        overrides.check_arguments(args.total_batch, args.max_iters, args.crop_size,
                                  args.num_workers)
        if not Path(args.config).is_file():
            raise ValueError(f"config {args.config} does not exist; expected an experiment "
                             "of configs/segmentation/")
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed, deterministic=args.deterministic)
    # mmengine keeps its logger, scope and visualiser per name for the whole process: a name
    # per run keeps the runs of --seeds from writing into the first one's log folder
    cfg.experiment_name = f"{Path(args.config).stem}_seed{seed}_{time.strftime('%Y%m%d_%H%M%S')}"
    if cfg.get("visualizer"):
        cfg.visualizer.name = f"visualizer_{cfg.experiment_name}"
    world = overrides.world_size(args.launcher)
    data_dir = overrides.set_data_root(cfg, args.data_root)
    overrides.set_batch(cfg, args.total_batch or cfg.total_batch_size, world)
    if args.max_iters:
        overrides.set_max_iters(cfg, args.max_iters)
    if args.crop_size:
        overrides.set_crop_size(cfg, args.crop_size)
    if args.num_workers is not None:
        overrides.set_num_workers(cfg, args.num_workers)
    if args.resume:
        cfg.resume = True
        cfg.load_from = None if args.resume == "auto" else args.resume
    try:
        overrides.check_known_keys(cfg, args.cfg_options)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    cfg.merge_from_dict(args.cfg_options)
    return cfg, {"world": world, "data_dir": str(data_dir)}


def preflight(cfg, args) -> None:
    """Fail before any model or worker exists: the work dir, the dataset layout, the
    checkpoint --resume would pick."""
    try:
        check_output_dir(cfg.work_dir, "--work-dir")
        print(check_dataset(cfg.dataset_name, args.data_root))
        check_resume_checkpoint(cfg)
    except (ValueError, OSError) as exc:  # layout and place errors name the files
        raise SystemExit(str(exc)) from exc


def convert_backbone(cfg, args, work_dir: str) -> Converted:
    """The one read of --backbone: strictly, as the architecture the config builds, written
    into ``work_dir`` for the backbone's Pretrained init (every seed's run loads that file)."""
    arch = arch_of_backbone_cfg(cfg.model.backbone)
    try:
        converted = convert_into(args.backbone, arch, work_dir, "mmseg")
    except (ValueError, OSError) as exc:  # unreadable, another architecture: named
        raise SystemExit(f"--backbone: {exc} ({args.config} builds {arch})") from exc
    print(converted.report())
    return converted


def check_resume_checkpoint(cfg) -> None:
    """With --resume: the checkpoint it would resume from must be a readable mmengine one."""
    if not cfg.get("resume"):
        return
    from mmengine.runner.checkpoint import find_latest_checkpoint

    from transfer.mmseg_side.runner import check_trained_checkpoint

    path = cfg.load_from or (find_latest_checkpoint(cfg.work_dir)
                             if Path(cfg.work_dir, "last_checkpoint").is_file() else None)
    if path:
        check_trained_checkpoint(path, cfg.work_dir)


def main(argv=None) -> int:
    args = parse_args(argv)
    work_dir = args.work_dir or str(Path("runs/segmentation") / Path(args.config).stem)
    try:
        runs = planned_runs(work_dir, args.seed, args.seeds)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    converted = None
    for seed, folder in runs:
        cfg, run = build_config(args, seed, str(folder))
        preflight(cfg, args)
        if converted is None:  # read once, for every seed: the config's arch is theirs too
            converted = convert_backbone(cfg, args, work_dir)
        overrides.set_pretrained(cfg, converted.path)
        train_one(args, seed, cfg, run, converted)
    return 0


def train_one(args, seed: int, cfg, run: dict, converted: Converted) -> None:
    """One seed: training, the final validation, metrics.json in ``cfg.work_dir``."""
    from mmengine.dist import barrier, is_main_process

    from transfer.mmseg_side.runner import (SegRunner, find_metric, metrics_record,
                                            seg_reference, write_run_marker, write_seg_metrics)

    try:  # before training, not after it: the metrics.json needs the protocol's reference
        seg_reference(cfg, args.config)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc

    runner = SegRunner.from_cfg(cfg)
    runner.pretrained = converted  # what VerifyPretrainedHook checks the backbone against
    backbone = converted.weights.info()
    if is_main_process():
        write_run_marker(cfg.work_dir, {
            "config": args.config, "backbone_file": str(converted.path), "backbone": backbone,
            "dataset": cfg.dataset_name, "data_dir": run["data_dir"], "protocol": cfg.protocol,
            "processes": run["world"], "batch_per_process": cfg.train_dataloader.batch_size})
    barrier()  # every process checks the marker before trusting a checkpoint to resume from
    start = time.time()
    runner.train()
    metric = find_metric(runner.val_loop.evaluator)
    if not metric.evaluated:  # resumed after the last iteration: no final validation ran
        runner.test()
        metric = find_metric(runner.test_loop.evaluator)
    if is_main_process():
        metrics, per_class_acc = metrics_record(metric)
        path = write_seg_metrics(
            cfg.work_dir, cfg, args.config, backbone, metrics, time.time() - start,
            run["world"], extra={
                "per_class_acc": per_class_acc, "iterations": cfg.train_cfg.max_iters,
                "total_batch": cfg.train_dataloader.batch_size * run["world"],
                "log_dir": runner.log_dir})
        print(f"seed {seed}: mIoU {metric.summary['mIoU']:.2f}, "
              f"mAcc {metric.summary['mAcc']:.2f}: {path}")


if __name__ == "__main__":
    sys.exit(main())
