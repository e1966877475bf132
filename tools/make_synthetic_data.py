#!/usr/bin/env python
"""Write small synthetic datasets in the real on-disk layouts under one data root.

Scenes come from pretrain.synthetic.render_scene (grey scenes of 3-5 objects, class = texture),
so every framework reads them with its own dataset code and the metrics measure learning.

Formats and where they go (the data-root layout of transfer/datasets.py):
  voc         ROOT/VOCdevkit/VOC2012            PASCAL VOC 2012 + SBD aug (segmentation)
  cityscapes  ROOT/cityscapes                   Cityscapes fine, label train ids
  ade20k      ROOT/ade/ADEChallengeData2016     ADE20k SceneParsing
  coco        ROOT/coco                         COCO instances (transfer/synthetic/detection.py)
  voc_det     ROOT/VOC2007, ROOT/VOC2012        VOC detection XML, detectron2's layout (idem)
  imagefolder ROOT/imagenet/{train,val}/<class>/ ImageNet-style folder (pretraining, k-NN)

Examples:
  python tools/make_synthetic_data.py --root /tmp/synth --formats voc,cityscapes,ade20k
  python tools/make_synthetic_data.py --root data_demo --formats voc --num-train 200 \\
      --num-val 50 --size 96
"""
import argparse
import sys
from pathlib import Path

import _bootstrap  # noqa: F401

from transfer import extras
from transfer.synthetic.segmentation import WRITERS

FORMATS = ("voc", "cityscapes", "ade20k", "coco", "voc_det", "imagefolder")


def write_detection(kind: str, root: Path, num_train: int, num_val: int, size: int, seed: int):
    # the detection layouts draw masks with opencv and encode them with pycocotools: both in
    # requirements/transfer.txt, so absent from a pretraining-only (VICREGL_NO_MMCV=1) set-up
    missing = [name for name in ("cv2", "pycocotools") if not extras.available(name)]
    if missing:
        raise SystemExit(f"--formats {kind} needs {' and '.join(missing)} "
                         "(requirements/transfer.txt: bash tools/setup_env.sh without "
                         "VICREGL_NO_MMCV=1)")
    from transfer.synthetic import detection as synthetic_detection

    writer = synthetic_detection.write_coco if kind == "coco" else \
        synthetic_detection.write_voc_detection
    return writer(root, num_train, num_val, size, seed)


def write_format(kind: str, root: Path, num_train: int, num_val: int, size: int, seed: int):
    if kind in WRITERS:
        return WRITERS[kind](root, num_train, num_val, size, seed)
    if kind in ("coco", "voc_det"):
        return write_detection(kind, root, num_train, num_val, size, seed)
    from transfer.datasets import IMAGEFOLDER_SUBDIR
    from transfer.synthetic.image_folder import write_image_folder

    return write_image_folder(root / IMAGEFOLDER_SUBDIR, num_train, size, seed, num_val=num_val)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path, help="data root to write under")
    parser.add_argument("--formats", default="voc,cityscapes,ade20k",
                        help=f"comma-separated, from {','.join(FORMATS)}")
    parser.add_argument("--num-train", type=int, default=16, help="training images per format "
                        "(imagefolder: the train/ split)")
    parser.add_argument("--num-val", type=int, default=8, help="validation images per format")
    parser.add_argument("--size", type=int, default=64,
                        help="image side in pixels (Cityscapes: size x 2*size); 64 is enough "
                             "for tests, 96-128 for a demo where numbers should move")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    kinds = [k.strip() for k in args.formats.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FORMATS]
    if unknown or not kinds:
        raise SystemExit(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    for kind in kinds:
        where = write_format(kind, args.root, args.num_train, args.num_val, args.size, args.seed)
        print(f"{kind}: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
