# Cityscapes fine: 2975 train / 500 val images, 19 classes (label train ids; 255 ignored).
# mmseg's dataset config (crop 512x1024, random resize 0.5-2.0 of 2048x1024, flip,
# photometric distortion; test at 2048x1024).
# data_root is set by tools/seg_train.py --data-root (ROOT/cityscapes).
_base_ = ['mmseg::_base_/datasets/cityscapes.py']

dataset_name = 'cityscapes'
dataset_subdir = 'cityscapes'
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
