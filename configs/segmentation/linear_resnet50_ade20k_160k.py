# Frozen linear segmentation, VICRegL protocol (ResNet recipe extended to ADE20k's 160k
# schedule): ResNet-50 at output stride 8, BN + dropout + 1x1 conv on layer4, ADE20k (150
# classes), crop 512, 160k iterations, batch 16, SGD 0.01 poly.
_base_ = [
    './_base_/models/linear_resnet50_os8.py', './_base_/datasets/ade20k.py',
    './_base_/schedules/sgd_poly_160k.py', './_base_/default_runtime.py'
]
crop_size = (512, 512)
model = dict(data_preprocessor=dict(size=crop_size), decode_head=dict(num_classes=150))
