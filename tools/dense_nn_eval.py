#!/usr/bin/env python
"""Training-free dense nearest-neighbour segmentation of a frozen backbone (Hummingbird).

The memory holds the local features of the training images (a seeded fraction of them) with
their cells' label distributions; every validation cell takes the softmax(sim/T)-weighted vote
of its k most similar memory cells; the votes are upsampled to the label size and scored with
mIoU as the segmentation protocols are. CONFIG is a segmentation config of the suite: its
train/val datasets (classes, ignore index, reduce_zero_label) are read by mmseg's own dataset
classes. Writes WORK_DIR/metrics.json (task "dense_retrieval", protocol "dense_nn").
Defaults follow open-hummingbird-eval (k 30, T 0.02, all training images); see
docs/evaluation.md.

Examples:
  python tools/dense_nn_eval.py configs/segmentation/linear_resnet50_voc12aug_40k.py \\
      --arch resnet50 --backbone runs/r50/backbone.pth --data-root data \\
      --work-dir runs/eval/r50_dense_nn
  # 1/8 of the training images, three seeds in one process (each draws its own subset):
  # W/seed0/metrics.json, W/seed1/..., W/seed2/...; a rerun skips the finished seeds
  python tools/dense_nn_eval.py CONFIG --arch A --backbone B --memory-fraction 0.125 \\
      --seeds 0 1 2 --work-dir W
  # CPU smoke run on the synthetic VOC layout (64-pixel images)
  python tools/dense_nn_eval.py configs/segmentation/linear_convnext_small_voc12aug_40k.py \\
      --arch convnext_mini --backbone random:0 --data-root /tmp/synth --work-dir /tmp/dnn \\
      --crop-size 64 --workers 0
"""
import argparse
import sys

import _bootstrap  # noqa: F401

from mmengine.config import DictAction

from pretrain.common.arguments import add_backbone_arg, finite_number, int_at_least
from transfer.datasets import add_data_root_arg
from transfer.evaluation.dense_retrieval import FEATURES, LABEL_POOLING
from transfer.mmseg_side.dense_nn import DenseNNSettings
from transfer.seed_runs import add_seed_args, print_results

def parse_args(argv=None):
    ref = DenseNNSettings()
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="a segmentation config of configs/segmentation/")
    p.add_argument("--arch", required=True, help="official name: resnet50, convnext_small, ...")
    add_backbone_arg(p)
    add_data_root_arg(p, "VOCdevkit/VOC2012, cityscapes, ade/ADEChallengeData2016")
    p.add_argument("--work-dir", required=True, help="where metrics.json goes")
    add_seed_args(p, "the memory subset and its augmentation")
    p.add_argument("--memory-fraction", type=finite_number(0, 1, low_open=True),
                   default=ref.memory_fraction,
                   help="share of the training images in the memory (Hummingbird: 1/128 .. 1)")
    p.add_argument("--memory-epochs", type=int_at_least(1), default=ref.memory_epochs,
                   help="augmented passes over the memory images (open-hummingbird-eval's "
                        "augmentation_epoch; its README results use 2)")
    p.add_argument("--memory-size", type=int_at_least(1), default=ref.memory_size,
                   help="cap on memory entries, spread evenly over images, rare classes first "
                        "(the paper: 10240000); default: every labelled cell")
    p.add_argument("--k", type=int_at_least(1), default=ref.k, help="neighbours per query cell")
    p.add_argument("--temperature", type=finite_number(0, low_open=True),
                   default=ref.temperature,
                   help="softmax temperature on cosine similarities")
    p.add_argument("--features", choices=FEATURES, default=ref.features,
                   help="last: the local features VICRegL trains (default); stageN: a raw "
                        "stage; concat: the 4 stages at stride 4 (the ConvNeXt linear "
                        "protocol's input; large: cap with --memory-size)")
    p.add_argument("--label-pooling", choices=LABEL_POOLING, default=ref.label_pooling,
                   help="soft: the cell's class shares (Hummingbird); majority: one-hot")
    p.add_argument("--no-augment", action="store_true",
                   help="memory images through the val pipeline instead of the train one")
    p.add_argument("--crop-size", type=int_at_least(32),
                   help="scale every input size of the config so its crop is this (tests)")
    p.add_argument("--batch-size", type=int_at_least(1), default=ref.batch_size)
    p.add_argument("--workers", type=int_at_least(0), default=ref.workers,
                   help="0: load in this process")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                   help="final config edits key=value")
    return p.parse_args(argv)


def settings_of(args) -> DenseNNSettings:
    return DenseNNSettings(k=args.k, temperature=args.temperature,
                           memory_fraction=args.memory_fraction,
                           memory_epochs=args.memory_epochs, memory_size=args.memory_size,
                           label_pooling=args.label_pooling, features=args.features,
                           augment=not args.no_augment, batch_size=args.batch_size,
                           workers=args.workers)


def main(argv=None) -> int:
    args = parse_args(argv)
    from transfer.mmseg_side.dense_nn import evaluate

    try:
        results = evaluate(args.config, arch=args.arch, backbone=args.backbone,
                           data_root=args.data_root, work_dir=args.work_dir, seed=args.seed,
                           seeds=args.seeds, settings=settings_of(args),
                           crop_size=args.crop_size, cfg_options=args.cfg_options)
    except (FileNotFoundError, ValueError) as exc:  # layout, checkpoint, options
        raise SystemExit(f"dense_nn_eval: {exc}") from exc
    print_results("dense_nn", results, args.work_dir, args.seeds, ("mIoU", "mAcc"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
