"""The MMSegmentation 1.x side of transfer.

Importing this package imports nothing from mmseg: ``layouts`` (dataset checks) and
``checkpoint`` (the converted-checkpoint format) stay usable without it. Configs load the
mmseg add-ons with ``custom_imports = dict(imports=['transfer.mmseg_side.register'])``, which
registers, in mmseg's registries:

- ``VICRegLConvNeXt`` (MODELS): the pretraining ConvNeXt itself, multi-stage, frozen or not;
- ``VICRegLResNet`` (MODELS): the pretraining ``resnet_nano`` (CPU demo), likewise;
- ``LinearProbeHead`` (MODELS): the VICRegL linear protocol head (BN, dropout, 1x1 conv);
- ``PerClassIoUMetric`` (METRICS): mmseg's IoUMetric that keeps the per-class table;
- ``VerifyPretrainedHook`` (HOOKS): fails the run unless the backbone holds exactly the
  weights tools/seg_train.py read from ``--backbone``.
"""
