#!/usr/bin/env python
"""Build PASCAL VOC 2012 "aug" for MMSegmentation: SBD's labels as SegmentationClassAug.

Input: VOC 2012 under DATA_ROOT/VOCdevkit/VOC2012 (JPEGImages, SegmentationClass,
ImageSets/Segmentation/{train,val}.txt) and SBD's benchmark_RELEASE (dataset/cls/*.mat,
dataset/{train,val}.txt). Output, in VOC2012: SegmentationClassAug/*.png (class indices) and
ImageSets/Segmentation/aug.txt (SBD minus VOC train and val: 9118 ids) and trainaug.txt
(10582 ids). The .mat conversion and the split rule are mmseg's own converter
(mmseg/.mim/tools/dataset_converters/voc_aug.py, imported from the wheel); this tool checks
the inputs first and the result after, naming every missing or malformed file.

Examples:
  python tools/prepare/voc_aug.py --data-root data --sbd downloads/benchmark_RELEASE --nproc 8
  VICREGL_DATA_ROOT=/datasets python tools/prepare/voc_aug.py --sbd /datasets/benchmark_RELEASE
"""
import argparse
import sys
from functools import partial
from pathlib import Path

from _common import add_common_args, fail, missing_files, mmseg_converter, run_parallel

from transfer import datasets as ds
from transfer.mmseg_side.layouts import DatasetLayoutError, check_voc12aug


def read_ids(path: Path, problems: list[str]) -> list[str]:
    if not path.is_file():
        problems.append(f"missing split file {path}")
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def check_inputs(voc: Path, sbd: Path) -> dict[str, list[str]]:
    problems: list[str] = []
    for folder in (voc / ds.VOC_IMAGES, voc / ds.VOC_LABELS, sbd / "dataset" / "cls"):
        if not folder.is_dir():
            problems.append(f"missing folder {folder}")
    sets = voc / ds.VOC_SPLITS
    ids = {"voc_train": read_ids(sets / "train.txt", problems),
           "voc_val": read_ids(sets / "val.txt", problems),
           "sbd_train": read_ids(sbd / "dataset" / "train.txt", problems),
           "sbd_val": read_ids(sbd / "dataset" / "val.txt", problems)}
    sbd_ids = ids["sbd_train"] + ids["sbd_val"]
    problems += missing_files("SBD label files (dataset/cls/<id>.mat)",
                              [sbd / "dataset" / "cls" / f"{i}.mat" for i in sbd_ids],
                              len(sbd_ids))
    problems += missing_files("VOC 2012 images for SBD ids (JPEGImages/<id>.jpg)",
                              [voc / ds.VOC_IMAGES / f"{i}.jpg" for i in sbd_ids], len(sbd_ids))
    fail(f"cannot build VOC aug from {voc} and {sbd}", problems)
    return ids


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--sbd", required=True, type=Path,
                        help="SBD's benchmark_RELEASE folder (holding dataset/cls)")
    args = parser.parse_args(argv)
    voc = ds.VOC12AUG.folder(args.data_root)
    ids = check_inputs(voc, args.sbd)

    converter = mmseg_converter("voc_aug")
    sbd_ids = ids["sbd_train"] + ids["sbd_val"]
    trainaug = sorted(converter.generate_aug_list(ids["voc_train"] + sbd_ids, ids["voc_val"]))
    aug = sorted(converter.generate_aug_list(sbd_ids, ids["voc_train"] + ids["voc_val"]))
    if not args.allow_partial and len(trainaug) != converter.AUG_LEN:
        fail("unexpected VOC aug size (nothing written)", [
            f"VOC train + SBD minus VOC val gives {len(trainaug)} ids, the released VOC aug "
            f"has {converter.AUG_LEN} (pass --allow-partial for a subset)"])

    out_dir = voc / ds.VOC_AUG_LABELS
    out_dir.mkdir(exist_ok=True)
    mats = [f"{i}.mat" for i in sorted(set(sbd_ids))]
    run_parallel(partial(converter.convert_mat, in_dir=str(args.sbd / "dataset" / "cls"),
                         out_dir=str(out_dir)), mats, args.nproc)
    sets = voc / ds.VOC_SPLITS
    (sets / "trainaug.txt").write_text("".join(f"{i}\n" for i in trainaug))
    (sets / "aug.txt").write_text("".join(f"{i}\n" for i in aug))
    print(f"wrote {len(mats)} label maps to {out_dir}; aug.txt {len(aug)} ids, "
          f"trainaug.txt {len(trainaug)} ids")
    try:
        print(check_voc12aug(voc, full=not args.allow_partial))
    except DatasetLayoutError as exc:
        raise SystemExit(str(exc)) from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())
