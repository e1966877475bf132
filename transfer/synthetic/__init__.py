"""Synthetic datasets written in the real datasets' on-disk layouts, so each framework reads
them with its own dataset code (tests, the CPU demo):

- ``image_folder``: ImageNet-style ``train/<class>/`` and ``val/<class>/`` (pretraining, the
  global classification task);
- ``segmentation``: PASCAL VOC 2012 + SBD aug, Cityscapes, ADE20k (MMSegmentation's layouts);
- ``detection``: COCO instances and VOC detection (detectron2's layouts).

The folders are those of ``transfer/datasets.py``. The scenes themselves come from
``pretrain.synthetic.render_scene``, which stays in pretrain/ because pretraining renders
scenes in memory (``data.kind=synthetic``) and pretrain/ never imports transfer/. numpy and
PIL only (and pycocotools, OpenCV for COCO polygons); no framework.
"""
