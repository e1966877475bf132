"""Detectron2 side of the transfer suite (an optional extra: see docs/detection.md).

- ``conversion``: ResNet backbone -> detectron2 ``.pkl`` (no detectron2 import, works without it);
- ``config``: ``add_vicregl_config(cfg)``, the config keys our add-ons read;
- ``backbone``: the VICRegL ConvNeXt as a registered detectron2 backbone (+ FPN);
- ``roi_heads``: ``Res5ROIHeadsExtraNorm``, the C4 head of the self-supervised protocols;
- ``data``: (re)registration of the COCO / VOC / synthetic datasets under one data root;
- ``evaluation``: the evaluators and their results flattened for metrics.json;
- ``solver``: SGD or AdamW from the config;
- ``checkpoint``: the check that a converted file really landed in the model.

Importing this package does NOT import detectron2; the modules that need it import it.
"""

# detectron2 is installed from its source repository at this commit (tools/install_detectron2.sh).
DETECTRON2_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"
