# Frozen linear segmentation, VICRegL protocol (Bardes et al. 2022; official config
# linear_r50_512x512_40k_voc12aug):
# ResNet-50 at output stride 8, BN + dropout + 1x1 conv on layer4, PASCAL VOC aug, crop 512,
# 40k iterations, batch 16, SGD 0.01 poly. Official VICRegL ResNet-50 (alpha 0.75): 55.9 mIoU.
_base_ = [
    './_base_/models/linear_resnet50_os8.py', './_base_/datasets/voc12aug.py',
    './_base_/schedules/sgd_poly_40k.py', './_base_/default_runtime.py'
]
crop_size = (512, 512)
model = dict(data_preprocessor=dict(size=crop_size), decode_head=dict(num_classes=21))
# The protocol's settings as published; tools/seg_train.py records the run's own beside them
# in metrics.json and the tables mark every difference (transfer/fingerprint.py).
reference_settings = dict(total_batch=16, norm='SyncBN', crop=(512, 512), test_mode='whole',
                          iterations=40000, precision='fp32', lr=0.01)
