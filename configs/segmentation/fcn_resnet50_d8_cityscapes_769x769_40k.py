# Fine-tuned segmentation, MoCo / DenseCL / mmselfsup protocol: FCN R50-D8 (torchvision-style
# ResNet-50, SyncBN, all layers trained), Cityscapes fine, crop 769, 40k iterations, batch 8
# (mmselfsup's 4 GPUs x 2), SGD 0.01 poly, align_corners, slide inference 769/513.
_base_ = [
    './_base_/models/fcn_resnet50_d8.py', './_base_/datasets/cityscapes_769x769.py',
    './_base_/schedules/sgd_poly_40k.py', './_base_/default_runtime.py'
]
total_batch_size = 8
crop_size = (769, 769)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=19, align_corners=True),
    auxiliary_head=dict(num_classes=19, align_corners=True),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(513, 513)))
# The protocol's settings as published; tools/seg_train.py records the run's own beside them
# in metrics.json and the tables mark every difference (transfer/fingerprint.py).
reference_settings = dict(total_batch=8, norm='SyncBN', crop=(769, 769), test_mode='slide',
                          iterations=40000, precision='fp32', lr=0.01)
