# PASCAL VOC 2012 + SBD ("VOC aug"): train = train.txt (SegmentationClass) + aug.txt
# (SegmentationClassAug), 10582 images; val = val.txt, 1449 images; 21 classes.
# mmseg's dataset config (crop 512, random resize 0.5-2.0 of 2048x512, flip, photometric
# distortion); the evaluator also keeps the per-class IoU for metrics.json.
# data_root is set by tools/seg_train.py --data-root (ROOT/VOCdevkit/VOC2012).
_base_ = ['mmseg::_base_/datasets/pascal_voc12_aug.py']

dataset_name = 'voc12aug'
dataset_subdir = 'VOCdevkit/VOC2012'
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
