"""Fused heads (one call per crop size, BatchNorm statistics per view) compute the official
function: same outputs, gradients and running statistics as one call per view."""
import copy

import pytest
import torch
from torch import nn

from equivalence_inputs import make_inputs
from pretrain.heads import mlp
from pretrain.model import VICRegL
from pretrain.perview import per_view_mlp
from conftest import THREADS  # noqa: E402

torch.set_num_threads(THREADS)


def test_per_view_mlp_equals_one_call_per_view():
    torch.manual_seed(0)
    reference = mlp("32-32-16", 12, "batch_norm").double().train()
    fused = copy.deepcopy(reference)
    inputs = [torch.randn(10, 12, dtype=torch.float64) * (v + 1) + v for v in range(3)]
    expected = [reference(x) for x in inputs]
    got = per_view_mlp(fused, inputs)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # running statistics: three successive momentum updates, as three calls make them
    for (key, a), b in zip(reference.state_dict().items(), fused.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=key)
    assert int(fused[1].num_batches_tracked) == 3
    sum(o.pow(2).sum() for o in expected).backward()
    sum(o.pow(2).sum() for o in got).backward()
    for (key, a), b in zip(reference.named_parameters(), fused.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12, msg=key)
    # evaluation mode uses the running statistics, per view the same ones
    reference.eval(), fused.eval()
    for a, b in zip([reference(x) for x in inputs], per_view_mlp(fused, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _model_pair(arch: str, **kwargs):
    torch.manual_seed(0)
    reference = VICRegL(arch, "64-64-64", "32-32-32", num_classes=5, drop_path_rate=0.0,
                        **kwargs).double().train()
    fused = copy.deepcopy(reference)
    return reference, fused


def _compare(reference: nn.Module, fused: nn.Module, crops):
    views, locations = make_inputs(crops, batch=6)
    labels = torch.arange(6) % 5
    loss_a, logs_a = reference(views, locations, labels)
    loss_b, logs_b = fused(views, locations, labels)
    for key in logs_a:
        torch.testing.assert_close(logs_a[key], logs_b[key], rtol=1e-10, atol=1e-12, msg=key)
    loss_a.backward(), loss_b.backward()
    for (key, a), b in zip(reference.named_parameters(), fused.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12, msg=key)
    for (key, a), b in zip(reference.state_dict().items(), fused.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=key)


@pytest.mark.slow
def test_fused_heads_resnet_multicrop():
    reference, fused = _model_pair("resnet18")
    fused.fuse_heads = True
    _compare(reference, fused, [(64, 2)] * 2 + [(32, 1)] * 3)


def test_fused_views_convnext_runs_heads_once_per_size():
    reference, fused = _model_pair("convnext_mini")
    fused.fuse_views = fused.fuse_heads = True
    _compare(reference, fused, [(64, 2)] * 2 + [(32, 1)] * 2)
