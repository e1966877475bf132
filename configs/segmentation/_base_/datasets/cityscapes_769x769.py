# Cityscapes with the 769x769 crops of the FCN fine-tuning protocol (mmseg's config:
# random resize 0.5-2.0 of 2049x1025, crop 769, flip, photometric distortion).
_base_ = ['mmseg::_base_/datasets/cityscapes_769x769.py']

dataset_name = 'cityscapes'
dataset_subdir = 'cityscapes'
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
