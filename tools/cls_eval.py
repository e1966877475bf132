#!/usr/bin/env python
"""Global evaluation of a frozen backbone on an ImageFolder: weighted k-NN or linear probe.

Reads ROOT/<dataset>/train/<class>/* and ROOT/<dataset>/val/<class>/*; writes
WORK_DIR/metrics.json (task "classification", metrics top1/top5 in percent). The defaults are
the reference protocols: k-NN as DINO (k 20, T 0.07) and the official VICRegL evaluate.py
linear recipe (SGD 0.3, cosine, 100 epochs, batch 256); see docs/evaluation.md.

Examples:
  # k-NN, one process (GPU if present)
  python tools/cls_eval.py --arch resnet50 --backbone runs/r50/backbone.pth \\
      --data-root data --work-dir runs/eval/r50_knn --protocol knn
  # linear probe on 8 GPUs (total batch 256 -> 32 per GPU); rerun the same line to resume
  torchrun --nproc_per_node 8 tools/cls_eval.py --arch resnet50 --backbone B \\
      --data-root data --work-dir runs/eval/r50_linear --protocol linear
  # the same on SLURM (requeued on timeout, resumes from WORK_DIR/linear_checkpoint.pth)
  python tools/cls_eval.py ... --protocol linear --slurm --gpus-per-node 8 --partition P
  # CPU smoke run on a tiny synthetic ImageFolder
  python tools/cls_eval.py --arch convnext_mini --backbone random:0 --data-root /tmp/synth \\
      --work-dir /tmp/lin --protocol linear --epochs 2 --batch-size 8 --image-size 32 \\
      --resize 32 --workers 0
"""
import argparse
import sys

import _bootstrap  # noqa: F401

from pretrain.common.arguments import add_backbone_arg, finite_number, int_at_least
from pretrain.common.slurm import Requeueable, add_slurm_args, submit
from transfer.datasets import IMAGEFOLDER_SUBDIR, add_data_root_arg
from transfer.evaluation.linear_probe import LinearRecipe
from transfer.seed_runs import add_seed_args, print_results

def parse_args(argv=None):
    ref = LinearRecipe()
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, help="official name: resnet50, convnext_small, ...")
    add_backbone_arg(p)
    add_data_root_arg(p, "<dataset>/train and <dataset>/val")
    p.add_argument("--dataset", default=IMAGEFOLDER_SUBDIR, help="sub-folder of the data root")
    p.add_argument("--work-dir", required=True, help="metrics.json and the probe checkpoint")
    p.add_argument("--protocol", choices=("knn", "linear"), default="knn",
                   help="knn: training-free, minutes; linear: the official 100-epoch probe")
    add_seed_args(p, "the linear head's data order and init, the k-NN bank's subset")
    knn = p.add_argument_group("k-NN (DINO's weighted vote)")
    knn.add_argument("--k", type=int_at_least(1), default=20, help="neighbours (reference 20)")
    knn.add_argument("--temperature", type=finite_number(0, low_open=True), default=0.07,
                     help="vote weight exp(sim/T)")
    knn.add_argument("--memory-fraction", type=finite_number(0, 1, low_open=True), default=1.0,
                     help="share of the training images in the bank, drawn by the seed (1.0, "
                          "the reference, uses all: the vote is then deterministic and seeds "
                          "give one number; below 1, seeds measure how much the bank matters)")
    lin = p.add_argument_group("linear probe (official evaluate.py; defaults = reference)")
    lin.add_argument("--epochs", type=int_at_least(1), default=ref.epochs)
    lin.add_argument("--batch-size", type=int_at_least(1), default=ref.batch_size,
                     help="total over all processes (also the k-NN feature batch)")
    lin.add_argument("--lr", type=finite_number(0, low_open=True), default=ref.lr,
                     help="not scaled with the batch")
    lin.add_argument("--weight-decay", type=finite_number(0), default=ref.weight_decay)
    lin.add_argument("--momentum", type=finite_number(0, 1, high_open=True),
                     default=ref.momentum)
    lin.add_argument("--image-size", type=int_at_least(32), default=ref.crop,
                     help="crop side (train RandomResizedCrop, val centre crop)")
    lin.add_argument("--resize", type=int_at_least(32), default=ref.resize,
                     help="val short side before the centre crop")
    lin.add_argument("--workers", type=int_at_least(0), default=ref.workers,
                     help="dataloader workers per process (0: load in the main process)")
    add_slurm_args(p)
    return p.parse_args(argv)


def recipe_of(args) -> LinearRecipe:
    return LinearRecipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        weight_decay=args.weight_decay, momentum=args.momentum,
                        crop=args.image_size, resize=args.resize, workers=args.workers)


def run(args) -> dict | None:
    from transfer.evaluation.cls_eval import evaluate

    try:
        return evaluate(arch=args.arch, backbone=args.backbone, data_root=args.data_root,
                        work_dir=args.work_dir, protocol=args.protocol, dataset=args.dataset,
                        seed=args.seed, seeds=args.seeds, recipe=recipe_of(args), k=args.k,
                        temperature=args.temperature, memory_fraction=args.memory_fraction)
    except (FileNotFoundError, ValueError) as exc:  # layout, checkpoint, resume mismatch
        raise SystemExit(f"cls_eval: {exc}") from exc


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.slurm:
        args.slurm = False  # the job itself runs here-and-now on each task
        submit(Requeueable(run, args), args, args.work_dir, f"cls_{args.protocol}")
        return 0
    results = run(args)
    print_results(args.protocol, results or {}, args.work_dir, args.seeds,  # None: not rank 0
                  ("top1", "top5"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
