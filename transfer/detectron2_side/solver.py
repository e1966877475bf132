"""The optimizer named by ``SOLVER.OPTIMIZER``: detectron2's SGD, or AdamW for ConvNeXt."""
import torch
from detectron2.solver import build_optimizer as build_sgd
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD exactly as detectron2 builds it, or AdamW with the same parameter groups
    (``WEIGHT_DECAY_NORM`` for norm layers, ``BIAS_LR_FACTOR`` / ``WEIGHT_DECAY_BIAS`` for
    biases) and gradient clipping; ``SOLVER.MOMENTUM`` / ``NESTEROV`` are SGD-only."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        return build_sgd(cfg, model)
    if name != "ADAMW":
        raise ValueError(f"SOLVER.OPTIMIZER must be SGD or ADAMW, got {cfg.SOLVER.OPTIMIZER!r}")
    params = get_default_optimizer_params(
        model, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR, weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS)
    adamw = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
    return adamw(params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS),
                 weight_decay=cfg.SOLVER.WEIGHT_DECAY)
