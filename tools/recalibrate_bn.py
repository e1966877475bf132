#!/usr/bin/env python
"""Recompute a backbone's BatchNorm running statistics on clean training images.

A frozen evaluation uses the BatchNorm running statistics: identity ones (mean 0, var 1) for
a random initialisation, those of augmented training views for a pretrained backbone. This
tool recomputes them for any backbone on the same clean images, so every backbone of a
comparison is evaluated on one footing: the first --images of a seeded permutation of
ROOT/<dataset>/train (an ImageFolder, as tools/cls_eval.py reads it), through the evaluation
transform of tools/cls_eval.py (resize the short side, centre crop, normalise; no
augmentation). The statistics are the exact per-channel mean and unbiased variance of each
BatchNorm's inputs over all these images, the layers normalising with batch statistics as in
training (transfer/bn_recalibration.py); every other tensor is copied unchanged.

Writes our backbone export (what tools/export_backbone.py writes, atomically) with the
source's provenance plus ``bn_recalibration`` (images, image size, data folder, seed, ...)
and the new sha256; every metrics.json of an evaluation of it records ``bn_recalibration`` in
its ``backbone`` entry. A backbone without BatchNorm (ConvNeXt: LayerNorm) is written
unchanged, saying so. Suites run it with the backbone key ``recalibrate_bn:``
(docs/suites.md).

Examples:
  python tools/recalibrate_bn.py --arch resnet50 --backbone runs/r50/backbone.pth \\
      --data-root data --out runs/r50/backbone_bn.pth
  python tools/recalibrate_bn.py --arch resnet50 --backbone random:0 --data-root data \\
      --out runs/random_r50_bn.pth --images 800 --image-size 224
  # CPU smoke run on a tiny synthetic ImageFolder
  python tools/recalibrate_bn.py --arch resnet18 --backbone random:0 --data-root /tmp/synth \\
      --images 16 --image-size 32 --batch-size 8 --out /tmp/r18_bn.pth
"""
import argparse
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from pretrain.common.arguments import add_backbone_arg
from pretrain.common.preflight import check_output_file
from transfer.datasets import IMAGEFOLDER_SPLITS, IMAGEFOLDER_SUBDIR, add_data_root_arg


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, help="official name: resnet50, convnext_small, ...")
    add_backbone_arg(p)
    add_data_root_arg(p, "<dataset>/train, the ImageFolder the images come from")
    p.add_argument("--dataset", default=IMAGEFOLDER_SUBDIR,
                   help="sub-folder of the data root holding train/<class>/<image>")
    p.add_argument("--images", type=int, default=800,
                   help="how many training images: the first N of a permutation drawn by "
                        "--seed (all of them when the split has fewer)")
    p.add_argument("--image-size", type=int, default=224,
                   help="side of the centre crop the backbone sees (the evaluation's size)")
    p.add_argument("--resize", type=int,
                   help="short side before the centre crop (default: image size x 256/224, "
                        "the official evaluation transform's ratio)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="images per forward pass; each BatchNorm normalises with the batch's "
                        "statistics, as in training, while the statistics are accumulated")
    p.add_argument("--seed", type=int, default=0,
                   help="draws which images are used (and the weights of random with no seed)")
    p.add_argument("--workers", type=int, default=0,
                   help="dataloader workers (0: load in this process; a few hundred images "
                        "take seconds)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: CUDA when available")
    p.add_argument("--out", required=True, type=Path,
                   help="backbone file to write (our export format); never the input file")
    args = p.parse_args(argv)
    for name in ("images", "image_size", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.resize is None:
        args.resize = round(args.image_size * 256 / 224)
    return args


def check_paths(args) -> Path:
    """The training folder; refuses --out equal to the input file and unusable outputs."""
    source = str(args.backbone)
    random = source == "random" or source.startswith("random:")
    if not random and Path(source).resolve() == args.out.resolve():
        raise ValueError(f"--out {args.out} is the input file: write the recalibrated "
                         "backbone beside it, the source stays as it is")
    check_output_file(args.out, "--out")
    train = Path(args.data_root) / args.dataset / IMAGEFOLDER_SPLITS[0]
    if not train.is_dir():
        raise FileNotFoundError(f"missing image folder {train}; expected ROOT/<dataset>/train/"
                                "<class>/<image> (--data-root, --dataset)")
    return train


def image_batches(train: Path, args):
    """(the DataLoader of the chosen images, how many there are)."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets

    from transfer.evaluation.classification import eval_transform

    folder = datasets.ImageFolder(str(train), eval_transform(args.image_size, args.resize))
    order = torch.randperm(len(folder), generator=torch.Generator().manual_seed(args.seed))
    chosen = Subset(folder, order[:args.images].tolist())
    return DataLoader(chosen, batch_size=args.batch_size, shuffle=False,
                      num_workers=args.workers), len(chosen)


def recalibrate(args) -> dict:
    """Read, recompute, write; returns what was written."""
    import torch

    from pretrain.backbones import build_backbone
    from pretrain.checkpoint import atomic_save, state_dict_sha256
    from pretrain.common.provenance import git_sha
    from pretrain.weight_files import BACKBONE_FORMAT
    from transfer.bn_recalibration import batchnorm_layers, recalibrate_batchnorm
    from transfer.weights import read_backbone

    train = check_paths(args)
    weights = read_backbone(args.backbone, args.arch, seed=args.seed)
    print(weights.coverage())
    model = build_backbone(args.arch)
    model.load_state_dict(weights.state_dict, strict=True)
    layers = len(batchnorm_layers(model))
    images = 0
    if layers:
        device = torch.device("cuda" if args.device == "cuda" or (
            args.device == "auto" and torch.cuda.is_available()) else "cpu")
        loader, count = image_batches(train, args)
        start = time.time()
        images = recalibrate_batchnorm(model, loader, device)
        print(f"{layers} BatchNorm layers: statistics recomputed on {images} images of {train} "
              f"({args.image_size} px, resize {args.resize}, {device}, "
              f"{time.time() - start:.1f} s)")
    else:
        print(f"{args.arch}: no BatchNorm: statistics unchanged (written as they are)")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    sha = state_dict_sha256(state)
    provenance = dict(weights.recorded) if weights.kind == "ours-export" else {
        "source": weights.source, "kind": weights.kind}
    provenance.update(sha256=sha, bn_recalibration={
        "images": images, "batchnorm_layers": layers, "image_size": args.image_size,
        "resize": args.resize, "data": str(train.resolve()), "seed": args.seed,
        "batch_size": args.batch_size, "from": weights.source, "from_sha256": weights.sha256,
        "git_sha": git_sha()})
    export = {"format": BACKBONE_FORMAT, "arch": weights.arch, "state_dict": state,
              "provenance": provenance}
    atomic_save(export, args.out)
    return export


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        export = recalibrate(args)
    except (OSError, ValueError) as exc:  # bad source, data or output: named, nothing written
        raise SystemExit(str(exc)) from exc
    print(f"wrote {args.out}: {export['arch']}, {len(export['state_dict'])} tensors, sha256 "
          f"{export['provenance']['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
