"""One training step and the non-finite-loss guard, shared by the engine and the benchmark tool
(``tools/benchmark_pretrain.py`` times exactly this code).

The guard keeps the loss check off the critical path on a GPU: reading ``loss.item()`` every
step makes the CPU wait for the forward pass before it can queue the backward pass and the next
step. ``FiniteLossGuard`` instead records, on the device, the first step whose loss was not
finite (with its loss terms) and reads that record only when asked: every
``run.check_finite_every_steps`` steps, and always before a checkpoint is written, so a
non-finite run never saves a checkpoint. ``check_finite_every_steps=1`` keeps the strict
behaviour: the check runs before the backward pass, so no update is ever applied from a
non-finite loss.
"""
from contextlib import nullcontext

import torch
from torch import nn


class NonFiniteLossError(RuntimeError):
    pass


def autocast(precision: str, device: torch.device):
    """Autocast for ``fp16``/``bf16``; nothing for ``fp32``."""
    if precision == "fp32":
        return nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return torch.autocast(device.type, dtype=dtype)


class FiniteLossGuard:
    """Device-side record of the first non-finite loss; synchronises only in ``check``."""

    def __init__(self, device: torch.device, keys: list[str] | None = None):
        self.device = device
        self.keys = keys
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_values: torch.Tensor | None = None

    def record(self, step: int, loss: torch.Tensor, logs: dict[str, torch.Tensor]) -> None:
        """Note ``loss`` of ``step`` without synchronising (a few scalar kernels)."""
        if self.keys is None:
            self.keys = ["loss"] + sorted(logs)
        self.step.fill_(step)  # a kernel with a scalar argument: no host-device copy
        missing = loss.new_full((), float("nan"), dtype=torch.float32)
        values = torch.stack([loss.detach().float()] + [
            logs[k].float() if k in logs else missing for k in self.keys[1:]])
        newly_bad = ~torch.isfinite(values[0]) & (self.first_bad < 0)
        self.first_bad = torch.where(newly_bad, self.step, self.first_bad)
        self.bad_values = values if self.bad_values is None else torch.where(
            newly_bad, values, self.bad_values)

    def check(self, hint: str = "") -> None:
        """Raise ``NonFiniteLossError`` naming the first bad step and its terms, if any."""
        bad = int(self.first_bad)
        if bad < 0:
            return
        values = dict(zip(self.keys, self.bad_values.tolist()))
        loss = values.pop("loss")
        raise NonFiniteLossError(f"non-finite loss ({loss}) at step {bad}, terms {values}{hint}")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, precision: str, views, locations, labels,
               guard: FiniteLossGuard | None = None, step: int = 0, strict_check: bool = False,
               hint: str = "") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward under autocast, backward (scaled when fp16), optimiser step; returns the loss
    and the detached logs. ``strict_check`` reads the guard before the backward pass."""
    device = views[0].device
    with autocast(precision, device):
        loss, logs = model(views, locations, labels)
    if guard is not None:
        guard.record(step, loss, logs)
        if strict_check:
            guard.check(hint)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logs
