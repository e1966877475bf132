#!/usr/bin/env python
"""Convert a pretrained backbone into the file a transfer framework loads, by hand.

The transfer tools do not need it: tools/seg_train.py and tools/det_train.py convert their
--backbone into their own work dir (transfer/conversion.py). This writes the same files
elsewhere, to inspect a key map or to load a backbone from a framework's own tools.

Reads any source ``transfer.weights.read_backbone`` accepts (our export or training
checkpoint, the official VICRegL files, a torchvision ResNet state dict, ``random:SEED``),
strictly, then writes:

  --framework mmseg       a ``{"state_dict": {"backbone.*"}, "meta"}`` .pth for a backbone's
                          ``Pretrained`` init_cfg; the weights are first loaded strictly into
                          the mmseg backbone itself;
  --framework detectron2  a detectron2 .pkl (ResNet, ConvNeXt, resnet_nano) for
                          MODEL.WEIGHTS, through transfer.detectron2_side.conversion.

It prints the coverage and the key map (source key -> framework key).

Examples:
  python tools/convert.py --framework mmseg --arch resnet50 \\
      --source exp/vicregl_resnet50/backbone.pth --out exp/vicregl_resnet50/mmseg.pth
  python tools/convert.py --framework mmseg --arch convnext_small \\
      --source convnext_small_alpha0.75.pth --out checkpoints/convnext_small_mmseg.pth
  python tools/convert.py --framework mmseg --arch resnet50 --source random:0 --out r50_random.pth
  python tools/convert.py --framework detectron2 --arch resnet50 \\
      --source resnet50_alpha0.75.pth --out checkpoints/resnet50_d2.pkl
  python tools/convert.py --framework detectron2 --arch convnext_small \\
      --source convnext_small_alpha0.75.pth --out checkpoints/convnext_small_d2.pkl
"""
import argparse
import sys
from pathlib import Path

import _bootstrap  # noqa: F401

from pretrain.common.arguments import backbone_source, random_seed
from pretrain.common.preflight import check_output_file
from transfer.conversion import write_converted
from transfer.weights import read_backbone


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framework", required=True, choices=("mmseg", "detectron2"),
                        help="which framework's checkpoint to write")
    parser.add_argument("--arch", required=True,
                        help="official architecture name of the source, e.g. resnet50, "
                             "convnext_small (checked against the file)")
    parser.add_argument("--source", required=True, type=backbone_source,
                        help="checkpoint file, or random / random:SEED for the random floor")
    parser.add_argument("--out", required=True, type=Path, help="file to write")
    parser.add_argument("--quiet", action="store_true", help="print the summary, not every key")
    return parser.parse_args(argv)


def check_mmseg_keys(weights) -> str:
    """Prove the key map by a strict load into the mmseg backbone itself, before anything is
    written (seg_train instead checks its model's backbone after mmseg's own load)."""
    from transfer.mmseg_side.checkpoint import mmseg_model_keys

    loaded = mmseg_model_keys(weights.arch, weights.state_dict)
    return f"strict load into the mmseg backbone: {loaded} tensors"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:  # a bad source or output place stops here, before anything is written
        source_file = None if random_seed(args.source) is not None else args.source
        check_output_file(args.out, "--out", inputs={"--source": source_file})
        weights = read_backbone(args.source, args.arch)
    except (OSError, ValueError) as exc:
        raise SystemExit(str(exc)) from exc
    print(weights.coverage())
    if args.framework == "mmseg":
        print(check_mmseg_keys(weights))
    key_map = write_converted(weights, args.framework, args.out)
    print(key_map.splitlines()[-1] if args.quiet else key_map)
    print(f"wrote {args.out} ({args.framework}, {weights.arch}, sha256 {weights.sha256[:16]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
