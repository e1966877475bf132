"""Config keys read by our detectron2 add-ons (call before ``merge_from_file``)."""
from detectron2.config import CfgNode as CN


def add_vicregl_config(cfg: CN) -> CN:
    """Add the ``MODEL.CONVNEXT``, ``SOLVER.OPTIMIZER`` / ``SOLVER.BETAS`` and ``VICREGL``
    keys to a detectron2 config, in place, with their defaults; returns ``cfg``."""
    cfg.MODEL.CONVNEXT = CN()
    # Official name of the architecture (pretrain.backbones): convnext_small, convnext_base, ...
    cfg.MODEL.CONVNEXT.ARCH = "convnext_small"
    # Pretrained backbone, any source transfer.weights.read_backbone accepts (our export or
    # training checkpoint, official VICRegL file, random:SEED), read strictly at build time.
    # Empty: random init, for loading a trained detector with MODEL.WEIGHTS.
    cfg.MODEL.CONVNEXT.WEIGHTS = ""
    # Stochastic depth while fine-tuning (pretraining used 0.1).
    cfg.MODEL.CONVNEXT.DROP_PATH_RATE = 0.3
    # Stage outputs, detectron2 names: res2..res5 = strides 4, 8, 16, 32.
    cfg.MODEL.CONVNEXT.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # A fresh LayerNorm on each output, as ConvNeXt's own detection backbone has.
    cfg.MODEL.CONVNEXT.OUT_NORM = True

    # "SGD" (detectron2's default build) or "ADAMW" (ConvNeXt fine-tuning).
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BETAS = (0.9, 0.999)  # AdamW only

    cfg.VICREGL = CN()
    # Protocol name written to metrics.json (e.g. "finetune_c4_24k"); tables group by it.
    cfg.VICREGL.PROTOCOL = ""
    # Short dataset name for metrics.json (e.g. "voc07+12", "coco2017"); empty: first test set.
    cfg.VICREGL.DATASET = ""
    return cfg
