"""Optimisers with the official parameter groups, and the per-step learning-rate schedule."""
import math
from dataclasses import dataclass

import torch
from torch import nn

from .sampler import epoch_steps

# The weight decay when optim.weight_decay is null. The official LARS hard-codes 1e-6 whatever
# --weight-decay says; its AdamW takes --weight-decay, whose default is 0.05.
DEFAULT_WEIGHT_DECAY = {"adamw": 0.05, "lars": 1e-6}


def weight_decay_for(name: str, weight_decay: float | None) -> float:
    """``weight_decay``, or the optimiser's official one when it is None. Unlike the official
    LARS, ours uses an explicit value (the official code ignores ``--weight-decay`` there)."""
    if weight_decay is not None:
        return weight_decay
    if name not in DEFAULT_WEIGHT_DECAY:
        raise ValueError(f"optimizer must be one of {', '.join(DEFAULT_WEIGHT_DECAY)}, "
                         f"got {name!r}")
    return DEFAULT_WEIGHT_DECAY[name]


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


def build_optimizer(model: nn.Module, name: str, weight_decay: float | None = None,
                    fused: bool = False) -> torch.optim.Optimizer:
    """AdamW: weight decay on >= 2-D parameters only. LARS: biases and norms (1-D) excluded
    from decay and adaptation. ``weight_decay`` None: the optimiser's official value
    (``weight_decay_for``: LARS 1e-6, hard-coded in the official code; AdamW 0.05).

    ``fused``: AdamW's fused kernel (CUDA and CPU; it also takes the GradScaler's unscale and
    inf check without a host sync), LARS's multi-tensor update. Same updates to float rounding.
    """
    weight_decay = weight_decay_for(name, weight_decay)
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
    """Official schedule (utils.learning_schedule): base_lr * batch / 256, linear warmup from
    0, cosine to end_lr_ratio x, held there after ``total_steps``; the same float operations
    in the same order, so the same float. Without decay steps (warm-up as long as the
    schedule) the official code divides by zero; here the end value follows the warm-up."""
    peak = base_lr * batch_size / 256.0
    if step < warmup_steps:
        return step / warmup_steps * peak
    end = peak * end_lr_ratio
    span = max(total_steps - warmup_steps, 1)
    decayed = min(step - warmup_steps, span)
    return (peak - end) * (0.5 * (1 + math.cos(math.pi * decayed / span))) + end


@dataclass(frozen=True)
class Schedule:
    """A run's step counts and learning rate per step, as the official main_vicregl.py: an
    epoch is ``epoch_steps`` steps (the last batch partial), the global step runs over
    ``epochs * steps_per_epoch``, and the schedule spans ``epochs * N // batch_size`` steps
    (warm-up ``warmup_epochs * N // batch_size``): shorter than the run, the learning rate
    stays at its end value after it (ImageNet-1k, 512 = 8 x 64, 100 epochs: 250,300 steps
    run, 250,227 scheduled, 25,022 of warm-up). With ``drop_last`` (a deviation) the schedule
    spans exactly the run's full-batch steps, as this suite did before keeping the partial
    batch."""
    steps_per_epoch: int
    run_steps: int  # epochs x steps_per_epoch: where a run without optim.max_steps stops
    total_steps: int  # the schedule's length
    warmup_steps: int
    base_lr: float
    batch_size: int  # total over all processes: the peak is base_lr * batch_size / 256
    end_lr_ratio: float

    def learning_rate(self, step: int) -> float:
        return learning_rate(step, base_lr=self.base_lr, batch_size=self.batch_size,
                             total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                             end_lr_ratio=self.end_lr_ratio)


def run_schedule(optim: dict, dataset_size: int, world_size: int,
                 drop_last: bool = False) -> Schedule:
    """The ``Schedule`` of a config's ``optim`` section on ``dataset_size`` images."""
    batch, epochs, warmup = optim["batch_size"], optim["epochs"], optim["warmup_epochs"]
    per_epoch = epoch_steps(dataset_size, batch // world_size, world_size, drop_last)
    if drop_last:
        total, warm = epochs * per_epoch, warmup * per_epoch
    else:  # official: from the dataset size, not from the loader's length
        total, warm = epochs * dataset_size // batch, warmup * dataset_size // batch
    return Schedule(steps_per_epoch=per_epoch, run_steps=epochs * per_epoch, total_steps=total,
                    warmup_steps=warm, base_lr=optim["base_lr"], batch_size=batch,
                    end_lr_ratio=optim["end_lr_ratio"])
