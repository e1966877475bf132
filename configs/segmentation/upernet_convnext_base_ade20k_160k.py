# Fine-tuned segmentation, ConvNeXt paper / mmseg protocol: UPerNet on ConvNeXt-Base (the
# pretraining module, no layer scale; drop path 0.4), ADE20k (150 classes), crop 512, 160k
# iterations, batch 16, AdamW 1e-4 with stage-wise decay 0.9, fp16, warm-up 1500, poly 1.0,
# slide inference 512/341. Reference mIoU (supervised ImageNet-1k ConvNeXt-Base): 48.7.
_base_ = [
    './_base_/models/upernet_convnext.py', './_base_/datasets/ade20k.py',
    './_base_/schedules/adamw_layerdecay_amp_160k.py', './_base_/default_runtime.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='convnext_base', drop_path_rate=0.4),
    decode_head=dict(in_channels=[128, 256, 512, 1024], num_classes=150),
    auxiliary_head=dict(in_channels=512, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
# The protocol's settings as published; tools/seg_train.py records the run's own beside them
# in metrics.json and the tables mark every difference (transfer/fingerprint.py).
reference_settings = dict(total_batch=16, norm='SyncBN', crop=(512, 512), test_mode='slide',
                          iterations=160000, precision='fp16', lr=0.0001)
