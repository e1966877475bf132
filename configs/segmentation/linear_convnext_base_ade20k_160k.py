# Frozen linear segmentation, VICRegL protocol (official config
# linear_cnxt-b_public_512x512_160k_BN_ade20k): frozen ConvNeXt-Base, its 4 stages
# resized to stride 4 and concatenated (1920 channels), BN + 1x1 conv; ADE20k (150 classes),
# crop 512, 160k iterations, batch 16, AdamW 1e-4 (wd 0.05), warm-up 1500, poly 1.0, slide
# inference 512/341.
_base_ = [
    './_base_/models/linear_convnext.py', './_base_/datasets/ade20k.py',
    './_base_/schedules/adamw_poly_warmup_160k.py', './_base_/default_runtime.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='convnext_base'),
    decode_head=dict(in_channels=[128, 256, 512, 1024], num_classes=150))
# The protocol's settings as published; tools/seg_train.py records the run's own beside them
# in metrics.json and the tables mark every difference (transfer/fingerprint.py).
reference_settings = dict(total_batch=16, norm='SyncBN', crop=(512, 512), test_mode='slide',
                          iterations=160000, precision='fp32', lr=0.0001)
