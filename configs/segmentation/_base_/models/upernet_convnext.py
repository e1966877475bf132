# Fine-tuning protocol (ConvNeXt paper / mmseg's convnext configs): UPerNet on the 4 stages
# of the pretraining ConvNeXt (no layer scale, as VICRegL pretrains it), auxiliary FCN head on
# stage 3, SyncBN in the heads, all layers trained with stochastic depth. Experiments set the
# arch, drop_path_rate (0.3 for S, 0.4 for B) and the in_channels.
_base_ = ['mmseg::_base_/models/upernet_r50.py']

protocol = 'finetune_upernet'
total_batch_size = 16  # split over the GPUs by tools/seg_train.py
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='VICRegLConvNeXt',
        arch='convnext_small',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        drop_path_rate=0.3,
        init_cfg=None),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
