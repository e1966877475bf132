# Fine-tuning protocol of MoCo / DenseCL / mmselfsup: mmseg's FCN R50-D8 (dilated ResNet-50,
# output stride 8, FCN head with 2 convs + auxiliary FCN head on layer3, SyncBN everywhere,
# all layers trained), with a torchvision-style backbone: type='ResNet' (V1b) instead of
# mmseg's default ResNetV1c, and no open-mmlab pretrained weights.
_base_ = ['mmseg::_base_/models/fcn_r50-d8.py']

protocol = 'finetune_fcn_d8'
total_batch_size = 16  # split over the GPUs by tools/seg_train.py
model = dict(
    pretrained=None,
    backbone=dict(type='ResNet', init_cfg=None))
