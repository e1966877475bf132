#!/usr/bin/env python
"""Prepare ADE20k (SceneParsing, ADEChallengeData2016) for MMSegmentation.

The release (ADEChallengeData2016.zip) is already in the layout mmseg reads, so this tool
only unpacks it (with --zip) into DATA_ROOT/ade/ and checks the result: every image in
images/{training,validation} needs annotations/<split>/<same name>.png with values 0..150,
of the image's size; 20210 / 2000 images unless --allow-partial.

Examples:
  python tools/prepare/ade20k.py --data-root data --zip downloads/ADEChallengeData2016.zip
  python tools/prepare/ade20k.py --data-root data        # check an unpacked copy
"""
import argparse
import sys
import zipfile
from pathlib import Path

from _common import add_common_args, fail

from transfer.datasets import ADE20K
from transfer.mmseg_side.layouts import DatasetLayoutError, check_ade20k


def unpack(archive: Path, ade: Path) -> None:
    """Extract the release beside ``ade``: its one top folder is ``ade``'s name."""
    if not archive.is_file():
        fail("cannot unpack ADE20k", [f"archive {archive} does not exist"])
    with zipfile.ZipFile(archive) as zf:
        top = {name.split("/", 1)[0] for name in zf.namelist()}
        if top != {ade.name}:
            fail(f"{archive} is not the SceneParsing release",
                 [f"expected one top folder {ade.name}/, found {sorted(top)[:5]}"])
        zf.extractall(ade.parent)  # member paths are sanitised by zipfile (no "..", no "/")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--zip", type=Path, help="ADEChallengeData2016.zip to unpack first")
    args = parser.parse_args(argv)
    ade = ADE20K.folder(args.data_root)
    if args.zip:
        unpack(args.zip, ade)
        print(f"unpacked {args.zip} into {ade.parent}")
    try:
        print(check_ade20k(ade, full=not args.allow_partial))
    except DatasetLayoutError as exc:
        raise SystemExit(str(exc)) from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())
