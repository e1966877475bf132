# ConvNeXt UPerNet fine-tuning (mmseg's convnext configs): AdamW lr 1e-4, weight decay 0.05,
# stage-wise learning-rate decay 0.9 over 12 groups, mixed precision (fp16 + dynamic loss
# scale; needs a GPU), linear warm-up 1500 iterations then poly decay (power 1.0) to 160k.
_base_ = ['mmseg::_base_/schedules/schedule_160k.py']

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=12),
    constructor='LearningRateDecayOptimizerConstructor',
    loss_scale='dynamic')
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
