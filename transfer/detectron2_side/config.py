"""Config keys read by our detectron2 add-ons (call before ``merge_from_file``), and the run's
protocol fingerprint (transfer/fingerprint.py) read from a final config.

There is no ConvNeXt weights key: pretrained weights of every backbone come in through
``MODEL.WEIGHTS`` (a ``.pkl`` from ``conversion``), loaded by detectron2's checkpointer."""
from pathlib import Path

from detectron2.config import CfgNode as CN


def add_vicregl_config(cfg: CN) -> CN:
    """Add the ``MODEL.CONVNEXT``, ``MODEL.RESNET_NANO``, ``SOLVER.OPTIMIZER`` /
    ``SOLVER.BETAS`` and ``VICREGL`` keys to a detectron2 config, in place, with their
    defaults; returns ``cfg``."""
    cfg.MODEL.CONVNEXT = CN()
    # Official name of the architecture (pretrain.backbones): convnext_small, convnext_base, ...
    cfg.MODEL.CONVNEXT.ARCH = "convnext_small"
    # Stochastic depth while fine-tuning (pretraining used 0.1).
    cfg.MODEL.CONVNEXT.DROP_PATH_RATE = 0.3
    # Stage outputs, detectron2 names: res2..res5 = strides 4, 8, 16, 32.
    cfg.MODEL.CONVNEXT.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # A fresh LayerNorm on each output, as ConvNeXt's own detection backbone has.
    cfg.MODEL.CONVNEXT.OUT_NORM = True

    # build_vicregl_resnet_nano_sfp_backbone (the CPU demo): the architecture; its trunk norm
    # is MODEL.RESNETS.NORM, its pyramid MODEL.FPN.OUT_CHANNELS / NORM, as for the ResNet FPN.
    cfg.MODEL.RESNET_NANO = CN()
    cfg.MODEL.RESNET_NANO.ARCH = "resnet_nano"

    # "SGD" (detectron2's default build) or "ADAMW" (ConvNeXt fine-tuning).
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BETAS = (0.9, 0.999)  # AdamW only

    cfg.VICREGL = CN()
    # Protocol name written to metrics.json (e.g. "finetune_c4_24k"); tables group by it.
    cfg.VICREGL.PROTOCOL = ""
    # Short dataset name for metrics.json (e.g. "voc07+12", "coco2017"); empty: first test set.
    cfg.VICREGL.DATASET = ""
    # The protocol's settings as published, named as metrics.json ``settings`` names them
    # (lower case: total_batch, norm, iterations, precision, lr, ...); every protocol config
    # declares them (configs/detection/base/ssl_finetune.yaml and the experiment files), and
    # the tables mark a run whose settings differ. Free keys: a node that accepts new ones.
    cfg.VICREGL.REFERENCE = CN(new_allowed=True)
    return cfg


# detectron2 norm names -> the fingerprint's words
_NORMS = {"FrozenBN": "frozen", "": "none"}


def det_settings(cfg: CN, config_file: str | Path, world: int, gpus: int) -> dict:
    """What moves a detection number, as this run had it (after every KEY VALUE override)."""
    from transfer.fingerprint import config_sha256, framework_versions

    convnext = cfg.MODEL.BACKBONE.NAME.startswith("build_vicregl_convnext")
    norm = cfg.MODEL.FPN.NORM if convnext else cfg.MODEL.RESNETS.NORM
    return {
        "total_batch": cfg.SOLVER.IMS_PER_BATCH, "processes": world, "gpus": gpus,
        "norm": _NORMS.get(norm, norm), "min_size_train": list(cfg.INPUT.MIN_SIZE_TRAIN),
        "max_size_train": cfg.INPUT.MAX_SIZE_TRAIN, "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
        "iterations": cfg.SOLVER.MAX_ITER,
        "precision": "fp16" if cfg.SOLVER.AMP.ENABLED else "fp32", "lr": cfg.SOLVER.BASE_LR,
        "seed": cfg.SEED, "config_sha256": config_sha256(config_file),
        "frameworks": framework_versions(("torch", "torchvision", "detectron2")),
    }


def det_reference(cfg: CN, config_file: str | Path) -> dict:
    """The protocol's declared settings (``VICREGL.REFERENCE``); an error when it has none."""
    reference = {str(k): (list(v) if isinstance(v, tuple) else v)
                 for k, v in cfg.VICREGL.REFERENCE.items()}
    if not reference:
        raise ValueError(f"{config_file} declares no VICREGL.REFERENCE (the protocol's "
                         "total_batch, norm, iterations, precision, lr): see docs/suites.md, "
                         "'Protocol fingerprints'")
    return reference
