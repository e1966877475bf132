"""``VerifyPretrainedHook``: a wrong backbone fails the run before the first iteration.

mmengine's ``Pretrained`` init loads with ``strict=False`` and only logs mismatches, so a
checkpoint of the wrong architecture (or with renamed keys) would silently leave a random
backbone. This hook runs after weights are initialised and before training, and compares the
backbone, tensor by tensor, with the weights tools/seg_train.py read and converted
(``SegRunner.pretrained``; ``checkpoint.verify_backbone``), in memory. A run resumed from its
own checkpoint (iteration > 0) has its weights from there and is not checked.
"""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from .checkpoint import verify_backbone


@HOOKS.register_module()
class VerifyPretrainedHook(Hook):
    """See the module docstring; declared by configs/segmentation/_base_/default_runtime.py."""

    priority = "VERY_HIGH"

    def before_train(self, runner) -> None:
        if runner.iter > 0:
            runner.logger.info(f"resumed at iteration {runner.iter}: backbone weights come "
                               "from the run's own checkpoint, not re-checked")
            return
        converted = getattr(runner, "pretrained", None)
        if converted is None:  # a config run by another tool: its backbone is random
            raise ValueError("no backbone weights to check the backbone against: it would "
                             "train from a random initialisation. Start the run with "
                             "tools/seg_train.py --backbone SOURCE (random:SEED for a random "
                             "baseline)")
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        runner.logger.info(verify_backbone(
            model.backbone, converted.weights.state_dict,
            f"{converted.path} (from {converted.weights.source})"))
