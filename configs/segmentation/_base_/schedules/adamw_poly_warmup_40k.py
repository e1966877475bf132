# The VICRegL ConvNeXt linear protocol: AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05;
# linear warm-up over 1500 iterations from 1e-6 x lr, then poly decay (power 1.0, to 0) until
# 40k; checkpoints and validation every 4k (from mmseg's schedule_40k).
_base_ = ['mmseg::_base_/schedules/schedule_40k.py']

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=40000),
]
