# Frozen linear segmentation, VICRegL protocol (official config
# linear_cnxt-s_public_512x512_40k_BN_voc12aug): frozen ConvNeXt-Small, its 4 stages
# resized to stride 4 and concatenated (1440 channels), BN + 1x1 conv; PASCAL VOC aug, crop
# 512, 40k iterations, batch 16, AdamW 1e-4 (wd 0.05), warm-up 1500, poly 1.0, slide inference
# 512/341. Official VICRegL ConvNeXt-Small: 67.5 (alpha 0.75), 66.7 (alpha 0.9) mIoU.
_base_ = [
    './_base_/models/linear_convnext.py', './_base_/datasets/voc12aug.py',
    './_base_/schedules/adamw_poly_warmup_40k.py', './_base_/default_runtime.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='convnext_small'),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=21))
# The protocol's settings as published; tools/seg_train.py records the run's own beside them
# in metrics.json and the tables mark every difference (transfer/fingerprint.py).
reference_settings = dict(total_batch=16, norm='SyncBN', crop=(512, 512), test_mode='slide',
                          iterations=40000, precision='fp32', lr=0.0001)
