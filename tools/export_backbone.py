#!/usr/bin/env python
"""Write the backbone-only checkpoint (official key names + provenance) from a training
checkpoint. Training does this at its end; use this tool for intermediate checkpoints.

Example
  python tools/export_backbone.py runs/vicregl_resnet50_2x224_100e_in1k/checkpoint.pth \\
      runs/vicregl_resnet50_2x224_100e_in1k/backbone_ep50.pth
"""
import argparse
import sys

import _bootstrap  # noqa: F401

from pretrain.checkpoint import export_backbone
from pretrain.common.preflight import check_output_file
from pretrain.weight_files import TRAIN_FORMAT, load_state_file


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="training checkpoint (checkpoint.pth)")
    parser.add_argument("output", help="backbone file to write")
    args = parser.parse_args(argv)
    try:  # a bad input or output place stops here, before anything is written
        check_output_file(args.output, "output", inputs={"checkpoint": args.checkpoint})
        state = load_state_file(args.checkpoint)
    except (OSError, ValueError) as exc:
        raise SystemExit(str(exc)) from exc
    if not isinstance(state, dict) or state.get("format") != TRAIN_FORMAT:
        raise SystemExit(f"{args.checkpoint} is not a training checkpoint of this suite "
                         f"(expected format {TRAIN_FORMAT})")
    export = export_backbone(state, args.output, args.checkpoint)
    print(f"wrote {args.output}: {export['arch']}, {len(export['state_dict'])} tensors, "
          f"step {export['provenance']['step']}, sha256 {export['provenance']['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
