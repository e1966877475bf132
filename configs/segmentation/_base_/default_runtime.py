# Runtime shared by every segmentation experiment: mmseg's default runtime (logging every 50
# iterations, local visualiser, no resume) plus the suite's add-ons, loaded through
# custom_imports (nothing in mmseg is patched):
#   - VerifyPretrainedHook: before the first iteration, the backbone must hold exactly the
#     tensors tools/seg_train.py read from --backbone (mmengine's Pretrained init is
#     strict=False and only logs); a run without them (another tool) fails;
#   - the modules registered by transfer/mmseg_side/register.py.
_base_ = ['mmseg::_base_/default_runtime.py']

custom_imports = dict(imports=['transfer.mmseg_side.register'], allow_failed_imports=False)
custom_hooks = [dict(type='VerifyPretrainedHook')]
