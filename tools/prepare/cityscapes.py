#!/usr/bin/env python
"""Prepare Cityscapes for MMSegmentation: render the *_gtFine_labelTrainIds.png label maps.

Input: DATA_ROOT/cityscapes with leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and
gtFine/{train,val}/<city>/*_gtFine_polygons.json (leftImg8bit_trainvaltest.zip and
gtFine_trainvaltest.zip, unpacked). Each polygon file becomes a train-id map through
cityscapesscripts' json2labelImg, called by mmseg's own converter
(mmseg/.mim/tools/dataset_converters/cityscapes.py, imported from the wheel); split lists
train.txt and val.txt are written as that converter does. Inputs are checked first (every
image needs its polygons), the result after (19 train ids + 255, sizes, counts 2975/500).

Examples:
  python tools/prepare/cityscapes.py --data-root data --nproc 8
  VICREGL_DATA_ROOT=/datasets python tools/prepare/cityscapes.py
"""
import argparse
import sys
from pathlib import Path

from _common import add_common_args, fail, missing_files, mmseg_converter, run_parallel

from transfer import datasets as ds
from transfer.mmseg_side.layouts import DatasetLayoutError, check_cityscapes


def polygon_files(city_root: Path, full: bool) -> dict[str, list[Path]]:
    """Every image's polygon file, per split; exits listing what is missing (and, with
    ``full``, split sizes other than the release's) before anything is written."""
    problems, found = [], {}
    released = ds.CITYSCAPES.full_counts
    for split in ds.CITYSCAPES_SPLITS:
        image_dir = city_root / ds.CITYSCAPES_IMAGES / split
        if not image_dir.is_dir():
            problems.append(f"missing folder {image_dir} (leftImg8bit_trainvaltest.zip)")
            continue
        images = sorted(image_dir.glob(f"*/*{ds.CITYSCAPES_IMAGE_SUFFIX}"))
        if not images:
            problems.append(f"no <city>/*{ds.CITYSCAPES_IMAGE_SUFFIX} images under {image_dir}")
        elif full and len(images) != released[split]:
            problems.append(f"{image_dir} has {len(images)} images, the release has "
                            f"{released[split]} (pass --allow-partial for a subset)")
        polygons = [ds.cityscapes_annotation(city_root, split, p, ds.CITYSCAPES_POLYGON_SUFFIX)
                    for p in images]
        problems += missing_files(f"{split} polygon files (gtFine_trainvaltest.zip)", polygons,
                                  len(images))
        found[split] = polygons
    fail(f"cannot prepare Cityscapes at {city_root}", problems)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    args = parser.parse_args(argv)
    city_root = ds.CITYSCAPES.folder(args.data_root)
    polygons = polygon_files(city_root, full=not args.allow_partial)

    converter = mmseg_converter("cityscapes")
    files = [str(p) for split in ds.CITYSCAPES_SPLITS for p in polygons[split]]
    run_parallel(converter.convert_json_to_label, files, args.nproc)
    for split in ds.CITYSCAPES_SPLITS:
        names = [f"{p.parent.name}/{p.name.removesuffix(ds.CITYSCAPES_POLYGON_SUFFIX)}"
                 for p in polygons[split]]
        (city_root / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    print(f"rendered {len(files)} labelTrainIds maps")
    try:
        print(check_cityscapes(city_root, full=not args.allow_partial))
    except DatasetLayoutError as exc:
        raise SystemExit(str(exc)) from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())
