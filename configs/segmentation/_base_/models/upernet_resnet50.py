# Fine-tuning protocol: mmseg's UPerNet R50 (PPM + FPN decoder on 4 stages, auxiliary FCN
# head on layer3, SyncBN, all layers trained) with a torchvision-style backbone
# (type='ResNet', V1b; no open-mmlab pretrained weights).
_base_ = ['mmseg::_base_/models/upernet_r50.py']

protocol = 'finetune_upernet'
total_batch_size = 16  # split over the GPUs by tools/seg_train.py
model = dict(
    pretrained=None,
    backbone=dict(type='ResNet', init_cfg=None))
