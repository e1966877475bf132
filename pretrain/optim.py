"""Optimisers with the official parameter groups, and the per-step learning-rate schedule."""
import math

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """LARS as the official ``optimizers.LARS``: SGD momentum on a trust-ratio-scaled update.

    Groups carry boolean flags (``weight_decay_filter``/``lars_adaptation_filter`` are True for
    the excluded biases and norms) instead of the official pickled functions, so our
    checkpoints load with ``weights_only=True`` (the official ones fail under torch >= 2.6).

    ``foreach=True`` does the same arithmetic with multi-tensor ``torch._foreach_*`` kernels (a
    few launches per group instead of about a dozen per parameter); the updates agree with the
    per-parameter loop to float rounding (``tests/test_perf_optim.py``).
    """

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 1e-6,
                 momentum: float = 0.9, eta: float = 1e-3, foreach: bool = False):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      eta=eta, exclude=False))
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        if self.foreach:
            for group in self.param_groups:
                self._foreach_group(group)
            return loss
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if not group["exclude"]:
                    update = update.add(p, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(update)
                    one = torch.ones_like(param_norm)
                    trust = torch.where(param_norm > 0.0, torch.where(
                        update_norm > 0, group["eta"] * param_norm / update_norm, one), one)
                    update = update.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                state["mu"].mul_(group["momentum"]).add_(update)
                p.add_(state["mu"], alpha=-group["lr"])
        return loss

    def _foreach_group(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        if group["exclude"]:
            updates = grads
        else:
            updates = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            param_norm = torch.stack(torch._foreach_norm(params))
            update_norm = torch.stack(torch._foreach_norm(updates))
            one = torch.ones_like(param_norm)
            trust = torch.where(param_norm > 0.0, torch.where(
                update_norm > 0, group["eta"] * param_norm / update_norm, one), one)
            torch._foreach_mul_(updates, list(trust.to(updates[0].dtype).unbind()))
        mus = []
        for p in params:
            state = self.state[p]
            if "mu" not in state:
                state["mu"] = torch.zeros_like(p)
            mus.append(state["mu"])
        torch._foreach_mul_(mus, group["momentum"])
        torch._foreach_add_(mus, updates)
        torch._foreach_add_(params, mus, alpha=-group["lr"])


def build_optimizer(model: nn.Module, name: str, weight_decay: float,
                    fused: bool = False) -> torch.optim.Optimizer:
    """AdamW: weight decay on >= 2-D parameters only. LARS: biases and norms (1-D) excluded
    from decay and adaptation; the official LARS hard-codes weight decay 1e-6.

    ``fused``: AdamW's fused kernel (CUDA and CPU; it also takes the GradScaler's unscale and
    inf check without a host sync), LARS's multi-tensor update. Same updates to float rounding.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    matrices = [p for p in params if p.ndim > 1]
    vectors = [p for p in params if p.ndim <= 1]
    if name == "adamw":
        return torch.optim.AdamW([{"params": vectors, "weight_decay": 0.0},
                                  {"params": matrices, "weight_decay": weight_decay}],
                                 lr=0.0, weight_decay=0.0, fused=fused or None)
    if name == "lars":
        return LARS([{"params": matrices}, {"params": vectors, "exclude": True}],
                    weight_decay=weight_decay, foreach=fused)
    raise ValueError(f"optimizer must be 'adamw' or 'lars', got {name!r}")


def learning_rate(step: int, *, base_lr: float, batch_size: int, total_steps: int,
                  warmup_steps: int, end_lr_ratio: float) -> float:
    """Official schedule: base_lr * batch / 256, linear warmup from 0, cosine to end_lr_ratio."""
    peak = base_lr * batch_size / 256.0
    if step < warmup_steps:
        return step / warmup_steps * peak
    end = peak * end_lr_ratio
    span = max(total_steps - warmup_steps, 1)
    progress = min(step - warmup_steps, span) / span
    return (peak - end) * 0.5 * (1 + math.cos(math.pi * progress)) + end
