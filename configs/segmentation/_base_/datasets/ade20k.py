# ADE20k SceneParsing (ADEChallengeData2016): 20210 train / 2000 val images, 150 classes
# (reduce_zero_label: label 0 "other" is ignored). mmseg's dataset config (crop 512, random
# resize 0.5-2.0 of 2048x512, flip, photometric distortion).
# data_root is set by tools/seg_train.py --data-root (ROOT/ade/ADEChallengeData2016).
_base_ = ['mmseg::_base_/datasets/ade20k.py']

dataset_name = 'ade20k'
dataset_subdir = 'ade/ADEChallengeData2016'
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
