#!/usr/bin/env python
"""Convert a pretrained backbone into the checkpoint a transfer framework loads.

Reads any source ``transfer.weights.read_backbone`` accepts (our export or training
checkpoint, the official VICRegL files, a torchvision ResNet state dict, ``random:SEED``),
strictly, then writes:

  --framework mmseg       a ``{"state_dict": {"backbone.*"}, "meta"}`` .pth for the backbone's
                          ``Pretrained`` init_cfg (tools/seg_train.py --checkpoint); the
                          weights are first loaded strictly into the mmseg backbone itself;
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

from pretrain.arguments import backbone_source, random_seed
from pretrain.preflight import check_output_file
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


def format_key_map(key_map: dict[str, str], quiet: bool) -> str:
    width = max(len(src) for src in key_map)
    lines = [] if quiet else [f"{src:<{width}} -> {dst}" for src, dst in key_map.items()]
    return "\n".join(lines + [f"{len(key_map)} tensors renamed, 0 unmatched"])


def convert_mmseg(weights, out: Path, quiet: bool) -> str:
    from transfer.mmseg_side.checkpoint import mmseg_model_keys, write_checkpoint

    loaded = mmseg_model_keys(weights.arch, weights.state_dict)
    key_map = write_checkpoint(out, weights)
    return (format_key_map(key_map, quiet)
            + f"\nstrict load into the mmseg backbone: {loaded} tensors")


def convert_detectron2(weights, out: Path, quiet: bool) -> str:
    from transfer.detectron2_side import conversion  # needs no detectron2

    model_dict, key_map = conversion.convert_backbone(weights)
    conversion.write_pkl(out, model_dict, provenance=weights.info())
    text = conversion.format_key_map(key_map)
    return text.splitlines()[-1] if quiet else text


def main(argv=None) -> int:
    args = parse_args(argv)
    try:  # a bad source or output place stops here, before anything is written
        source_file = None if random_seed(args.source) is not None else args.source
        check_output_file(args.out, "--out", inputs={"--source": source_file})
        weights = read_backbone(args.source, args.arch)
    except (OSError, ValueError) as exc:
        raise SystemExit(str(exc)) from exc
    print(weights.coverage())
    convert = convert_mmseg if args.framework == "mmseg" else convert_detectron2
    print(convert(weights, args.out, args.quiet))
    print(f"wrote {args.out} ({args.framework}, {weights.arch}, sha256 {weights.sha256[:16]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
