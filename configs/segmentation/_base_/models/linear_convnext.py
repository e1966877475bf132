# VICRegL frozen linear protocol, ConvNeXt (official segmentation configs): the pretraining
# ConvNeXt, frozen, returns its 4 stages; the head resizes them to stride 4, concatenates
# them (1440 channels for S, 1920 for B) and applies BN + 1x1 conv (no dropout).
# Experiments set the arch and in_channels (convnext_small: 96,192,384,768;
# convnext_base: 128,256,512,1024). Inference slides 512 crops with stride 341.
protocol = 'linear_frozen'
total_batch_size = 16  # split over the GPUs by tools/seg_train.py
norm_cfg = dict(type='SyncBN', requires_grad=True)  # plain BN without a distributed launcher
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='VICRegLConvNeXt',
        arch='convnext_small',
        out_indices=(0, 1, 2, 3),
        frozen_stages=4,
        init_cfg=None),
    decode_head=dict(
        type='LinearProbeHead',
        in_channels=[96, 192, 384, 768],
        in_index=[0, 1, 2, 3],
        input_transform='resize_concat',
        dropout_ratio=0.0,
        num_classes=21,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
