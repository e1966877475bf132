# SGD lr 0.01, momentum 0.9, weight decay 5e-4, poly decay (power 0.9, to 1e-4) over 160k
# iterations, by iteration; checkpoints and validation every 16k (mmseg's schedule_160k).
# The ResNet linear protocol (VICRegL) and the FCN / UPerNet R50 fine-tuning protocols.
_base_ = ['mmseg::_base_/schedules/schedule_160k.py']
