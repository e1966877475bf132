#!/usr/bin/env python
"""The paper's local-vs-global trade-off, in miniature, on the CPU: `make demo`.

1. data: synthetic scenes in the real layouts under OUT/data (a pretraining ImageFolder with a
   train and a val split, 64-pixel scenes of the `dominant` world; VOC aug, Cityscapes,
   ADE20k of the `mixed` world; COCO when detectron2 is installed);
2. suite configs/suites/demo_cpu.yaml, run by the suite runner: a resnet_nano (BatchNorm
   ResNet, output stride 8) pretrained with VICReg (alpha = 1) and with VICRegL
   (alpha = 0.75) beside random init, every backbone's BatchNorm statistics recomputed on the
   same clean training scenes, then, for each, 3 seeds of: the frozen linear segmentation
   protocol and the training-free dense nearest-neighbour retrieval on the three layouts
   (dense tasks), k-NN classification of the pretraining images' classes (the global task);
   Mask R-CNN on the synthetic COCO (one seed, shown in the table, no verdict). An overall
   progress line with an ETA is printed every --progress-every seconds, beside the runner's
   per-step lines;
3. tables: OUT/suite/table/ (table.md/.csv/.tex, the table and trade-off pictures);
4. pictures: OUT/suite/table/pca_maps.png, the PCA map of each backbone's local features
   beside the image and its ground truth;
5. verdicts: on every task VICReg > random and VICRegL > random (the pretraining learns);
   for each dense task VICRegL > VICReg, for the global one VICReg >= VICRegL (the paper's
   trade-off); each difference judged against the MEASURED seed spread (a difference counts
   when it exceeds 2 x the larger seed std of the two rows), and a summary of how many tasks
   reached each claim.

Exit status 0 when every row finished or only lacks an optional extra (detectron2: status
missing_extra). Running it again resumes (data and finished steps are kept); --fresh starts
over. Each step's log is in its folder under OUT/suite (printed when the step starts).

Examples:
  make demo                                     # = python tools/demo.py
  python tools/demo.py --out /tmp/demo --jobs 2
  python tools/demo.py --quick                  # tiny sizes, a subset of rows: plumbing, ~2 min
  VICREGL_HIDE_EXTRAS=detectron2 python tools/demo.py --quick   # as if detectron2 were absent
"""
import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from pretrain.common.durations import duration

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "configs" / "suites" / "demo_cpu.yaml"

# (images, size) per dataset; "quick" only checks the plumbing.
SIZES = {
    "full": {"pretrain_images": 2000, "pretrain_val": 500, "pretrain_size": 64,
             "seg_train": 200, "seg_val": 30, "seg_size": 64, "coco_train": 64, "coco_val": 16,
             "coco_size": 128},
    "quick": {"pretrain_images": 64, "pretrain_val": 32, "pretrain_size": 64, "seg_train": 8,
              "seg_val": 4, "seg_size": 64, "coco_train": 4, "coco_val": 2, "coco_size": 96},
}
QUICK_VARIABLES = {"pretrain_epochs": "1", "pretrain_warmup": "1", "pretrain_max_steps": "2",
                   "pretrain_batch": "8", "seg_iters": "4", "seg_crop": "64", "det_iters": "2"}
# --quick: 2 seeds of VOC linear (a spread to judge with), one of VOC retrieval and of k-NN
# (their verdicts say "spread unknown"), and one detection row
QUICK_ONLY = ["*/voc_linear/seed[01]", "*/voc_nn/seed0", "*/imagenet_knn/seed0",
              "random/coco_mask_rcnn*"]
# The default run: 3 seeds of every evaluation head on every layout (the runner runs a row's
# seeds in one process, so the ~10 s start-up of a tool is paid once per row, not per seed),
# and one detection row (no verdict). --full adds detection for every backbone.
DEFAULT_ONLY = ["*/voc_linear", "*/cityscapes_linear", "*/ade20k_linear", "*/voc_nn",
                "*/cityscapes_nn", "*/ade20k_nn", "*/imagenet_knn", "vicregl/coco_mask_rcnn*"]
# Expected wall time per step kind (seconds; a grouped row's seeds share their process's time)
# until steps of that kind have finished and their measured times replace these
# (transfer/suite/demo_progress.py). Measured on the 2-core machine, 2 jobs.
PRIORS = {
    "full": {"pretrain": 280, "recalibrate": 10, "segmentation": 20,
             "dense_retrieval": 4, "classification": 3, "detection": 45},
    "quick": {"pretrain": 17, "recalibrate": 8, "segmentation": 12,
              "dense_retrieval": 8, "classification": 6, "detection": 30},
}
ROLES = {"local": "vicregl", "global_": "vicreg", "floor": "random"}  # demo_cpu.yaml names
PCA_IMAGES = 2
PCA_STAGES, PCA_CELL = (4,), 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "work_dirs" / "demo",
                        help="everything goes here: data/, suite/ (runs, logs, tables, pictures)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="steps run at the same time, one core each (default: 2, or 1 on "
                             "a one-core machine)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny data, a few iterations and a subset of the rows (2 seeds of "
                             "VOC linear, 1 of VOC retrieval and of k-NN, one detection row): "
                             "checks that everything runs; the numbers mean nothing")
    parser.add_argument("--full", action="store_true",
                        help="every row of the suite: the default plus Mask R-CNN for VICReg "
                             "and random init (detection is slow on a CPU and has no verdict); "
                             "the default runs 3 seeds of every other head")
    parser.add_argument("--pretrain-epochs", type=int,
                        help="override the suite's pretraining epochs (shorter runs show less; "
                             "docs/suites.md, 'The demo')")
    parser.add_argument("--fresh", action="store_true", help="delete OUT first")
    parser.add_argument("--heartbeat", type=float, default=15.0, metavar="SECONDS",
                        help="how often a running step prints its last log line")
    parser.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                        help="how often the overall progress line (steps done, ETA) is printed")
    parser.add_argument("--stream", action="store_true", help="print every line of every step")
    parser.add_argument("--only", nargs="+", default=[], metavar="GLOB",
                        help="run only these suite steps (e.g. 'random/*', '*/voc_nn/seed0'), "
                             "plus what they need; the other rows stay pending in the table")
    return parser.parse_args(argv)


def write_data(root: Path, sizes: dict, detection: bool) -> None:
    """The datasets, once: a marker records the sizes so a rerun with others rewrites them."""
    from transfer.datasets import IMAGEFOLDER_SUBDIR
    from transfer.synthetic.image_folder import write_image_folder
    from transfer.synthetic.segmentation import WRITERS

    marker = root / "demo_data.json"
    wanted = dict(sizes, detection=detection)
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        print(f"  data already written under {root}")
        return
    if root.exists():
        shutil.rmtree(root)
    imagenet = root / IMAGEFOLDER_SUBDIR
    # the dominant world (a scene's objects share its class but one): its class can be read
    # from pooled features, so the global task tells learnt features from random ones
    write_image_folder(imagenet, sizes["pretrain_images"], sizes["pretrain_size"], seed=1,
                       num_val=sizes["pretrain_val"], world="dominant")
    print(f"  pretraining / classification: {sizes['pretrain_images']} train, "
          f"{sizes['pretrain_val']} val images ({sizes['pretrain_size']} px, dominant world), "
          f"ImageFolder at {imagenet}")
    for name in ("voc", "cityscapes", "ade20k"):
        where = WRITERS[name](root, sizes["seg_train"], sizes["seg_val"], sizes["seg_size"], 0)
        print(f"  {name}: {sizes['seg_train']} train / {sizes['seg_val']} val at {where}")
    if detection:
        from transfer.synthetic.detection import write_coco

        write_coco(root, sizes["coco_train"], sizes["coco_val"], sizes["coco_size"], 0)
        print(f"  coco: {sizes['coco_train']} train / {sizes['coco_val']} val at {root / 'coco'}")
    marker.write_text(json.dumps(wanted))


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_suite(plan, steps, args, variables: dict, mode: str) -> int:
    """Stage 2: the runner (per-step lines) under the overall progress monitor."""
    from transfer.suite.demo_progress import ProgressMonitor
    from transfer.suite.runner import RunOptions, SuiteRunner

    hint = (f"python tools/run_suite.py {SUITE.relative_to(ROOT)} --work-dir {plan.work_dir} "
            f"--data-root {plan.data_root} --pretrain"
            + "".join(f" --set {k}={v}" for k, v in variables.items()))
    options = RunOptions(jobs=args.jobs, pretrain=True, heartbeat_s=args.heartbeat,
                         stream=args.stream, retry_hint=hint + " --group-seeds",
                         group_seeds=True)  # a row's seeds in one process: start-up paid once
    with ProgressMonitor(steps, PRIORS[mode], args.jobs, args.progress_every):
        return SuiteRunner(plan, steps, options).run()


def make_pictures(plan, out_dir: Path) -> Path | None:
    """Stage 4: the PCA maps of every backbone whose weights exist (the others are named)."""
    from transfer.evaluation.pca_maps import write_pca_maps

    chosen, seen = [], set()
    for step in plan.rows:
        bb = step.backbone
        if bb.name in seen:
            continue
        seen.add(bb.name)
        if step.source.startswith("random") or Path(step.source).is_file():
            chosen.append((bb.label, bb.arch, step.source))
        else:
            print(f"  {bb.label}: no PCA map, {step.source} does not exist (pretraining not run)")
    if not chosen:
        return None
    # the last stage, what the local criterion trains, read on a 2-pixel grid (shifted
    # inputs): it shows which regions a backbone groups; stages 1-3 mostly follow the pixels
    return write_pca_maps(chosen, plan.data_root, out_dir / "pca_maps.png", count=PCA_IMAGES,
                          stages=PCA_STAGES, cell=PCA_CELL)


def report(plan, suite, args, written: dict, pca: Path | None) -> None:
    """Stage 5: the verdicts, then the pictures' paths."""
    from transfer.suite.tables import read_results
    from transfer.suite.verdicts import RULE, summary, verdict_lines, verdicts

    results = read_results(plan.work_dir / "results.json")
    labels = {name: bb.label for name, bb in suite.backbones.items()}
    found = verdicts(results["rows"], **ROLES)
    print(f"  rule: {RULE}")
    for line in verdict_lines(found, labels):
        print(f"  {line}")
    print(f"  SUMMARY: {summary(found, labels, **ROLES)}")
    if args.quick:
        print("  (--quick: a few iterations on tiny data; these numbers mean nothing)")
    pictures = [p for p in written.values() if str(p).endswith(".png")] + ([pca] if pca else [])
    print("pictures:")
    for path in pictures:
        print(f"  {path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    from transfer.extras import available
    from transfer.suite.plan import make_plan, select
    from transfer.suite.spec import load_suite
    from transfer.suite.tables import (build_rows, load_paper, make_tables, read_results,
                                       recalibration_note, summary_markdown)
    from transfer.suite.verdicts import not_finished

    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    detection = available("detectron2")
    mode = "quick" if args.quick else "full"
    print(f"[demo 1/5] synthetic data ({mode} sizes) under {args.out / 'data'}", flush=True)
    write_data(args.out / "data", SIZES[mode], detection)

    variables = dict(QUICK_VARIABLES) if args.quick else {}
    if args.pretrain_epochs is not None:
        variables["pretrain_epochs"] = str(args.pretrain_epochs)
        variables["pretrain_warmup"] = str(min(2, args.pretrain_epochs))  # warm-up <= epochs
    suite = load_suite(SUITE, variables)
    plan = make_plan(suite, args.out / "suite", args.out / "data", python=sys.executable)
    default = QUICK_ONLY if args.quick else [] if args.full else DEFAULT_ONLY
    steps = select(plan, args.only or default)
    print(f"[demo 2/5] suite {SUITE.relative_to(ROOT)}: {len(steps)} of {len(plan.steps)} "
          f"steps, {args.jobs} at a time; logs under {plan.work_dir}", flush=True)
    if not detection:
        print("  detectron2 is not available: the detection rows are missing_extra "
              "(tools/install_detectron2.sh installs it)", flush=True)
    # `kill` stops the running steps like Ctrl-C; SIGINT explicitly too: a process started
    # with SIGINT ignored (a background job of a script, a pytest-xdist worker's child)
    # inherits that, and Python then installs no KeyboardInterrupt handler of its own
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        code = run_suite(plan, steps, args, variables, mode)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130

    print("[demo 3/5] tables", flush=True)
    written = make_tables([plan.work_dir / "results.json"], plan.work_dir / "table")
    results = read_results(plan.work_dir / "results.json")
    print(summary_markdown(build_rows([results], load_paper(suite.paper_results))))
    note = recalibration_note([results])  # BN statistics recomputed (recalibrate_bn)
    if note:
        print(note)
    print("[demo 4/5] PCA maps of the local features", flush=True)
    pca = make_pictures(plan, plan.work_dir / "table")
    print(f"  {pca}" if pca else "  no backbone's weights exist yet: no PCA maps")
    print("[demo 5/5] verdicts: the paper's ordering, judged against the measured seed spread",
          flush=True)
    report(plan, suite, args, written, pca)
    unfinished = not_finished(results["rows"], {s.id for s in steps})
    if unfinished:
        print(f"not finished: {', '.join(unfinished)} (their logs are named above)")
    code = max(code, 1 if unfinished else 0)
    print(f"demo finished in {duration(time.time() - start)}"
          + ("" if code == 0 else " with failures (see above)"), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
