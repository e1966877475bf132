# Frozen linear segmentation, VICRegL ConvNeXt protocol carried to Cityscapes (no official
# config exists): frozen ConvNeXt-Base, 4 stages resized to stride 4 and concatenated
# (1920 channels), BN + 1x1 conv; Cityscapes fine (19 classes), crop 512x1024, 40k
# iterations, batch 16, AdamW 1e-4 (wd 0.05), warm-up 1500, poly 1.0; slide inference over
# 512x1024 windows with a 2/3 overlap stride (341x683), as the 512/341 recipe.
_base_ = [
    './_base_/models/linear_convnext.py', './_base_/datasets/cityscapes.py',
    './_base_/schedules/adamw_poly_warmup_40k.py', './_base_/default_runtime.py'
]
crop_size = (512, 1024)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='convnext_base'),
    decode_head=dict(in_channels=[128, 256, 512, 1024], num_classes=19),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 683)))
# The protocol's settings as published; tools/seg_train.py records the run's own beside them
# in metrics.json and the tables mark every difference (transfer/fingerprint.py).
reference_settings = dict(total_batch=16, norm='SyncBN', crop=(512, 1024), test_mode='slide',
                          iterations=40000, precision='fp32', lr=0.0001)
