"""``VerifyPretrainedHook``: a wrong checkpoint fails the run before the first iteration.

mmengine's ``Pretrained`` init loads with ``strict=False`` and only logs mismatches, so a
checkpoint of the wrong architecture (or with renamed keys) would silently leave a random
backbone. This hook runs after weights are initialised and before training, and compares the
backbone with the checkpoint tensor by tensor (``checkpoint.verify_backbone``). A run resumed
from its own checkpoint (iteration > 0) has its weights from there and is not checked.
"""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from .checkpoint import verify_backbone


@HOOKS.register_module()
class VerifyPretrainedHook(Hook):
    """Args:
        require: raise when the backbone has no ``Pretrained`` init_cfg at all (a run that
            would start from a random backbone without saying so). For a random baseline,
            convert ``random:SEED`` with tools/convert.py and load that file.
    """

    priority = "VERY_HIGH"

    def __init__(self, require: bool = True):
        self.require = require

    def before_train(self, runner) -> None:
        if runner.iter > 0:
            runner.logger.info(f"resumed at iteration {runner.iter}: backbone weights come "
                               "from the run's own checkpoint, not re-checked")
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        init_cfg = model.backbone.init_cfg
        init_cfgs = init_cfg if isinstance(init_cfg, list) else [init_cfg]
        pretrained = [c for c in init_cfgs if c and c.get("type") == "Pretrained"]
        if not pretrained:
            if self.require:
                raise ValueError("the backbone has no init_cfg=dict(type='Pretrained', ...): "
                                 "it would train from a random initialisation. Pass "
                                 "--checkpoint (a tools/convert.py output; convert 'random:0' "
                                 "for a random baseline)")
            runner.logger.warning("backbone starts from its random initialisation")
            return
        cfg = pretrained[0]
        runner.logger.info(verify_backbone(model.backbone, cfg["checkpoint"],
                                           cfg.get("prefix") or ""))
