# VICRegL frozen linear protocol, ResNet-50 (Bardes, Ponce, LeCun 2022, sec. 4.3 and the
# official segmentation configs): the backbone is frozen (frozen_stages=4, BN in eval mode)
# and dilated to output stride 8 (strides 1,2,1,1, dilations 1,1,2,4, contract_dilation: bit
# for bit torchvision's replace_stride_with_dilation=[False, True, True]); a linear head
# (BN + dropout 0.1 + 1x1 conv) classifies layer4's 2048 channels.
# mmseg's ResNet (type='ResNet', V1b, pytorch style) has torchvision's key names; NOT
# ResNetV1c, whose deep stem does not fit torchvision-style weights.
# The weights come from tools/seg_train.py --backbone (converted into the work dir, init_cfg).
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
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        contract_dilation=True,
        style='pytorch',
        frozen_stages=4,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        init_cfg=None),
    decode_head=dict(
        type='LinearProbeHead',
        in_channels=2048,
        in_index=3,
        dropout_ratio=0.1,
        num_classes=21,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
