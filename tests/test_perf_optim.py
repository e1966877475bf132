"""The faster optimiser paths give the same updates as the reference loops."""
import copy

import pytest
import torch
from torch import nn

from pretrain.optim import LARS, build_optimizer
from conftest import THREADS  # noqa: E402

torch.set_num_threads(THREADS)


def model_with_grads(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # (a bias right before a BatchNorm would get a zero gradient, whose rounding noise Adam
    # amplifies to full steps in either direction: no test of anything)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.BatchNorm1d(16), nn.Linear(16, 4))
    with torch.no_grad():
        model[3].bias.zero_()  # a zero-norm parameter: LARS's trust ratio falls back to 1
    return model


def run_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 4) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 0.1 * (step + 1)
        optimizer.zero_grad()
        x = torch.randn(32, 8, generator=g)
        model(x).pow(2).mean().backward()
        optimizer.step()
    return model


@pytest.mark.parametrize("name", ["lars", "adamw"])
def test_fused_optimiser_matches_the_loop(name):
    reference = model_with_grads()
    fused = copy.deepcopy(reference)
    run_steps(reference, build_optimizer(reference, name, 1e-3, fused=False))
    optimizer = build_optimizer(fused, name, 1e-3, fused=True)
    assert (optimizer.foreach if name == "lars" else optimizer.defaults["fused"])
    run_steps(fused, optimizer)
    for (key, a), b in zip(reference.state_dict().items(), fused.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=key)
    assert not torch.equal(reference[0].weight, model_with_grads()[0].weight), "nothing moved"


def test_foreach_lars_keeps_excluded_parameters_unadapted():
    """Biases and norms (the excluded group) get plain momentum SGD: no decay, no trust ratio."""
    p = nn.Parameter(torch.ones(3))
    optimizer = LARS([{"params": [p], "exclude": True}], lr=0.5, weight_decay=0.1, foreach=True)
    p.grad = torch.full((3,), 2.0)
    optimizer.step()
    torch.testing.assert_close(p.detach(), torch.full((3,), 1.0 - 0.5 * 2.0))
