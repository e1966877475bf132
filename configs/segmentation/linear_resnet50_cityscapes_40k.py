# Frozen linear segmentation, VICRegL protocol: ResNet-50 at output stride 8, BN + dropout +
# 1x1 conv on layer4, Cityscapes fine (19 classes; the official config's 30 is a bug), crop
# 512x1024, 40k iterations, batch 16, SGD 0.01 poly, whole-image inference at 2048x1024.
_base_ = [
    './_base_/models/linear_resnet50_os8.py', './_base_/datasets/cityscapes.py',
    './_base_/schedules/sgd_poly_40k.py', './_base_/default_runtime.py'
]
crop_size = (512, 1024)
model = dict(data_preprocessor=dict(size=crop_size), decode_head=dict(num_classes=19))
# The protocol's settings as published; tools/seg_train.py records the run's own beside them
# in metrics.json and the tables mark every difference (transfer/fingerprint.py).
reference_settings = dict(total_batch=16, norm='SyncBN', crop=(512, 1024), test_mode='whole',
                          iterations=40000, precision='fp32', lr=0.01)
