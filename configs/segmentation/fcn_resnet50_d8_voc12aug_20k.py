# Fine-tuned segmentation, MoCo / DenseCL / mmselfsup protocol: FCN R50-D8 (torchvision-style
# ResNet-50, SyncBN, all layers trained), PASCAL VOC aug, crop 512, 20k iterations, batch 16,
# SGD 0.01 poly. Reference mIoU: MoCo v2 67.6, DenseCL 69.5, BYOL 67.2.
_base_ = [
    './_base_/models/fcn_resnet50_d8.py', './_base_/datasets/voc12aug.py',
    './_base_/schedules/sgd_poly_20k.py', './_base_/default_runtime.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=21),
    auxiliary_head=dict(num_classes=21))
# The protocol's settings as published; tools/seg_train.py records the run's own beside them
# in metrics.json and the tables mark every difference (transfer/fingerprint.py).
reference_settings = dict(total_batch=16, norm='SyncBN', crop=(512, 512), test_mode='whole',
                          iterations=20000, precision='fp32', lr=0.01)
