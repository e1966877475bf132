#!/usr/bin/env python
"""Fine-tune and evaluate a detectron2 detector on a VICRegL (or other) backbone.

In the style of detectron2's ``projects/*/train_net.py``: detectron2's DefaultTrainer with our
evaluators and optimizer, one process per GPU through detectron2's ``launch`` (``--num-gpus``,
``--num-machines``, ``--machine-rank``, ``--dist-url``), ``--resume``, ``--eval-only``; config
options go last as ``KEY VALUE`` pairs. At the end, the main process writes
``OUTPUT_DIR/metrics.json`` (transfer/metrics.py) for the results tables.

    python tools/det_train.py --num-gpus 8 \\
        --config-file configs/detection/faster_rcnn_resnet50_c4_voc0712_24k.yaml \\
        --backbone runs/vicregl_resnet50/backbone.pth --data-root /data \\
        OUTPUT_DIR work_dirs/det/voc_c4_vicregl_r50

``--backbone`` takes any source the strict reader reads (our export or training checkpoint,
the official VICRegL files, a torchvision state dict, ``random:SEED``), as the other transfer
tools do, and reads it as the architecture the config builds (``RESNETS.DEPTH``,
``CONVNEXT.ARCH`` or ``RESNET_NANO.ARCH``). ResNet, ConvNeXt and ``resnet_nano`` alike, it is
converted to ``OUTPUT_DIR/backbone_<arch>.pkl`` (key map in the log), loaded as
``MODEL.WEIGHTS`` by detectron2's checkpointer, then checked to be fully in the model. Without
``--backbone``, ``MODEL.WEIGHTS`` is used as given (a .pkl of tools/convert.py, or a trained
detector with ``--eval-only``); a resumed run takes its weights from its own checkpoint.
Importing ``transfer.detectron2_side`` registers our backbones and RoI head, as a user's own
train_net would. See docs/detection.md.
"""
import json
import logging
import os
import time
from pathlib import Path

import _bootstrap  # noqa: F401
import torch

from transfer.extras import missing_reason

try:
    import detectron2.utils.comm as comm
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
    from detectron2.utils.logger import setup_logger
except ModuleNotFoundError as exc:  # absent or hidden: say so and how to install it
    if not missing_reason("detectron2"):
        raise  # installed, but something it needs is missing: the traceback says what
    raise SystemExit(f"tools/det_train.py needs detectron2: {missing_reason('detectron2')}"
                     ) from exc

from pretrain.common.arguments import add_backbone_arg
from pretrain.common.preflight import check_output_dir
from transfer.conversion import convert_into
from transfer.detectron2_side import add_vicregl_config
from transfer.detectron2_side.checkpoint import check_backbone_loaded
from transfer.detectron2_side.config import det_reference, det_settings
from transfer.detectron2_side.conversion import AUTHOR, check_weights_file, read_pkl
from transfer.detectron2_side.data import check_num_classes, register_datasets
from transfer.detectron2_side.evaluation import build_evaluator, metrics_from_results
from transfer.detectron2_side.solver import build_optimizer
from transfer.metrics import write_metrics

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("transfer.det_train")


class Trainer(DefaultTrainer):
    """DefaultTrainer with COCO / VOC evaluators by dataset type and SGD or AdamW."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)


def backbone_arch(cfg) -> str:
    """The official architecture name the config builds (ConvNeXt, resnet_nano or ResNet)."""
    if cfg.MODEL.BACKBONE.NAME.startswith("build_vicregl_convnext"):
        return cfg.MODEL.CONVNEXT.ARCH
    if cfg.MODEL.BACKBONE.NAME.startswith("build_vicregl_resnet_nano"):
        return cfg.MODEL.RESNET_NANO.ARCH
    return f"resnet{cfg.MODEL.RESNETS.DEPTH}"


def attach_backbone(cfg, args) -> str:
    """Convert --backbone to a .pkl beside the run, holding its provenance, and make it
    ``MODEL.WEIGHTS``; returns the text for the log."""
    arch = backbone_arch(cfg)
    try:
        converted = convert_into(args.backbone, arch, cfg.OUTPUT_DIR, "detectron2")
    except (ValueError, OSError) as exc:  # unreadable, another architecture: named
        raise SystemExit(f"--backbone: {exc} ({args.config_file} builds {arch})") from exc
    cfg.MODEL.WEIGHTS = str(converted.path)
    return converted.report()


def setup(args):
    cfg = get_cfg()
    add_vicregl_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    try:  # before detectron2 unpickles it: a crafted .pkl must not run
        check_output_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR")
        check_weights_file(cfg.MODEL.WEIGHTS)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"MODEL.WEIGHTS / OUTPUT_DIR: {exc}") from exc
    message = ""
    if args.backbone:
        if args.eval_only:
            raise SystemExit("--eval-only evaluates MODEL.WEIGHTS (a trained detector); "
                             "--backbone would replace it: drop --backbone")
        message = attach_backbone(cfg, args)
    cfg.freeze()
    try:  # before training, not after it: metrics.json needs the protocol's reference
        det_reference(cfg, args.config_file)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    default_setup(cfg, args)
    # our modules log under "transfer.*": same console and OUTPUT_DIR/log.txt as detectron2
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="transfer")
    if message:
        logger.info(message)
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    registered = register_datasets(args.data_root, names)
    logger.info(f"datasets under {args.data_root}: {', '.join(registered) or 'none'}")
    check_num_classes(cfg)
    return cfg


def _our_pkl(path: str) -> dict | None:
    """The file's ``__vicregl__`` provenance when it is a .pkl written by write_pkl."""
    if not path.endswith(".pkl") or not os.path.isfile(path):
        return None
    data = read_pkl(path)
    return data.get("__vicregl__", {}) if data.get("__author__") == AUTHOR else None


def _backbone_record(folder) -> dict | None:
    """The backbone.json a training run writes into its OUTPUT_DIR (None when absent)."""
    record = Path(folder) / "backbone.json"
    return json.loads(record.read_text()) if record.is_file() else None


def train(args, cfg):
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    resumed = args.resume and trainer.checkpointer.has_checkpoint()
    provenance = _our_pkl(cfg.MODEL.WEIGHTS)  # written by --backbone or tools/convert.py
    if provenance is not None and not resumed:
        logger.info(check_backbone_loaded(trainer.model, cfg.MODEL.WEIGHTS))
    info = provenance or (_backbone_record(cfg.OUTPUT_DIR) if resumed else None)
    if info is None and cfg.MODEL.WEIGHTS:
        info = {"arch": backbone_arch(cfg), "source": cfg.MODEL.WEIGHTS}
    if info is None:
        raise SystemExit("no backbone weights: pass --backbone SOURCE (a checkpoint, or "
                         "random:SEED for the random-init floor), or MODEL.WEIGHTS")
    if comm.is_main_process():
        (Path(cfg.OUTPUT_DIR) / "backbone.json").write_text(json.dumps(info, indent=2) + "\n")
    trainer.train()
    # DefaultTrainer keeps the final evaluation (EvalHook after the last iteration) here.
    return getattr(trainer, "_last_eval_results", None), info


def evaluate(cfg):
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS,
                                                                       resume=False)
    info = _backbone_record(Path(cfg.MODEL.WEIGHTS).parent)  # written by the training run
    if info is None:
        info = {"arch": backbone_arch(cfg),
                "source": f"unknown (no backbone.json beside {cfg.MODEL.WEIGHTS})"}
    return Trainer.test(cfg, model), info


def main(args):
    start = time.time()
    cfg = setup(args)
    results, info = evaluate(cfg) if args.eval_only else train(args, cfg)
    if not comm.is_main_process():
        return results
    if not results:
        raise RuntimeError("training ended without evaluation results (DATASETS.TEST empty?)")
    config = Path(args.config_file).resolve()
    gpus = comm.get_world_size() if torch.cuda.is_available() else 0
    path = write_metrics(
        Path(cfg.OUTPUT_DIR) / "metrics.json",
        task="instance_segmentation" if cfg.MODEL.MASK_ON else "detection",
        dataset=cfg.VICREGL.DATASET or cfg.DATASETS.TEST[0],
        protocol=cfg.VICREGL.PROTOCOL or config.stem,
        config=str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(config),
        backbone=info, metrics=metrics_from_results(results, cfg.DATASETS.TEST),
        wall_s=time.time() - start, gpus=gpus,
        settings=det_settings(cfg, config, comm.get_world_size(), gpus),
        reference=det_reference(cfg, config),
        extra={"output_dir": cfg.OUTPUT_DIR, "max_iter": cfg.SOLVER.MAX_ITER,
               "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH, "eval_only": bool(args.eval_only),
               "test_sets": list(cfg.DATASETS.TEST), "opts": list(args.opts)})
    logger.info(f"wrote {path}")
    return results


def build_parser():
    parser = default_argument_parser(epilog=__doc__)
    add_backbone_arg(parser, required=False)  # --eval-only, MODEL.WEIGHTS and --resume need none
    parser.add_argument(
        "--data-root", default=os.environ.get("DETECTRON2_DATASETS", "data"),
        help="folder holding coco/, VOC2007/, VOC2012/ (detectron2's layout); default "
             "$DETECTRON2_DATASETS, else data/")
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
