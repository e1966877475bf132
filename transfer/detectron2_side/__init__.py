"""Detectron2 side of the transfer suite (an optional extra: see docs/detection.md).

As in detectron2's ``projects/``, importing this package registers our modules in detectron2's
registries, so a user's own ``train_net.py`` needs one import and one config call:

    import transfer.detectron2_side as vicregl_d2  # registers the names below
    cfg = get_cfg(); vicregl_d2.add_vicregl_config(cfg); cfg.merge_from_file(...)

Registered: ``build_vicregl_convnext_backbone``, ``build_vicregl_convnext_fpn_backbone`` and
``build_vicregl_resnet_nano_sfp_backbone`` (``MODEL.BACKBONE.NAME``), ``Res5ROIHeadsExtraNorm``
(``MODEL.ROI_HEADS.NAME``).

- ``conversion``: backbone weights -> detectron2 ``.pkl`` (ResNet renamed, ConvNeXt prefixed),
  read back with an arrays-only unpickler; no detectron2 import, works without it;
- ``config``: ``add_vicregl_config(cfg)``, the config keys our add-ons read;
- ``backbone``: ``Detectron2ConvNeXt``, the pretraining ConvNeXt as a detectron2 backbone (+ FPN),
  and ``Detectron2ResNetNano``, the CPU demo's ``resnet_nano`` (+ SimpleFeaturePyramid);
- ``roi_heads``: ``Res5ROIHeadsExtraNorm``, the C4 head of the self-supervised protocols;
- ``checkpoint``: the check that a converted file really landed in the model;
- ``data``: (re)registration of the COCO / VOC / synthetic datasets under one data root;
- ``annotations``: COCO annotation files parsed at registration (no detectron2 import);
- ``evaluation``: the evaluators and their results flattened for metrics.json;
- ``solver``: SGD or AdamW from the config.

Without detectron2 (not installed, or hidden by ``VICREGL_HIDE_EXTRAS``, transfer/extras.py)
the package still imports, ``conversion`` and ``annotations`` work, and the names above raise
ModuleNotFoundError with the missing-extra reason (what is missing, how to install it).
"""
from transfer import extras
from transfer.detectron2_pin import DETECTRON2_COMMIT  # the commit it is installed from

# The names that need detectron2: imported (and so registered) now when it is usable here.
_REGISTERING = ("add_vicregl_config", "Detectron2ConvNeXt", "Detectron2ResNetNano",
                "build_vicregl_convnext_backbone", "build_vicregl_convnext_fpn_backbone",
                "build_vicregl_resnet_nano_sfp_backbone", "Res5ROIHeadsExtraNorm")

if extras.available("detectron2"):
    from .backbone import (Detectron2ConvNeXt, Detectron2ResNetNano,
                           build_vicregl_convnext_backbone, build_vicregl_convnext_fpn_backbone,
                           build_vicregl_resnet_nano_sfp_backbone)
    from .config import add_vicregl_config
    from .roi_heads import Res5ROIHeadsExtraNorm
else:
    def __getattr__(name: str):
        if name in _REGISTERING:
            raise ModuleNotFoundError(f"transfer.detectron2_side.{name} needs detectron2: "
                                      f"{extras.missing_reason('detectron2')}", name="detectron2")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["DETECTRON2_COMMIT", *_REGISTERING]
