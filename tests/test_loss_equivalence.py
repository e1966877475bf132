"""Our criterion and model against figures produced by the official VICRegL code.

- ``data/*.pt``: loss inputs and the outputs of the official ``global_loss``/``local_loss``
  (commit 803ae4c, float64, CPU) on them, six cases including exact location ties;
- ``data/official_model_terms.json``: the official model end to end (ResNet-50 and ConvNeXt-S,
  2x224 and 2x224+6x96, both ``l2_all_matches``) on the weights and inputs of
  ``equivalence_inputs.py``.
Every term must agree within 1e-5 relative. The model runs in float64, except the ConvNeXt-S
multi-crop case, which runs in float32: float64 depthwise 7x7 convolutions have no fast CPU
kernel (that case alone took 320 s in float64, ~15 s in float32); there float32 must still
agree with the float64 official figures within FLOAT32_RTOL = 3e-7 relative (measured: 1.5e-7),
30x inside the bar.
"""
import json
from pathlib import Path

import pytest
import torch

from equivalence_inputs import CASES, fill_state, make_inputs
from pretrain.losses import global_vicreg_terms, local_vicreg_terms
from pretrain.model import LOSS_KEYS
from pretrain.official import build_from_official_args

DATA = Path(__file__).parent / "data"
VECTOR_FILES = sorted(p.name for p in DATA.glob("*.pt"))
RTOL = 1e-5
FLOAT32_RTOL = 3e-7


def assert_terms_close(ours: dict, expected: dict, context: str, rtol: float = RTOL):
    for key in LOSS_KEYS:
        got, want = float(ours[key]), float(expected[key])
        assert abs(got - want) <= rtol * abs(want), f"{context} {key}: ours {got!r}, official {want!r}"


# Exact location ties: which of the tied positions the official code keeps is whatever
# torch.sort / topk's CPU kernel returns first (it asks for no stable order), so the official
# figure of this case is one machine's tie-break. Measured on this project's machines: where
# the figures were made, the default sort reproduced them to 1e-5; on an AVX-512 machine
# (another sort kernel) the local terms differ by 7e-4 (inv), 5e-3 (var) and 8e-3 (cov)
# relative, and a stable sort by up to 1e-2. A wrong matching rule moves them far more.
TIE_BREAK_RTOL = {"multicrop_tied_locations.pt": 1e-2}


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_loss_functions_match_official_vectors(name):
    case = torch.load(DATA / name, weights_only=True)
    s = case["settings"]
    coeffs = dict(inv_coeff=s["inv_coeff"], var_coeff=s["var_coeff"], cov_coeff=s["cov_coeff"])
    ours = global_vicreg_terms(case["embeddings"], **coeffs)
    ours.update(local_vicreg_terms(case["maps"], case["locations"], s["num_matches"],
                                   bool(s["l2_all_matches"]), **coeffs))
    assert_terms_close(ours, case["expected"], name, TIE_BREAK_RTOL.get(name, RTOL))


def test_all_six_vector_cases_are_there():
    """An empty data folder would otherwise pass the parametrised test above by running none."""
    assert len(VECTOR_FILES) == 6, VECTOR_FILES


def test_vectors_include_exact_ties():
    """The tied case must really contain tied location distances (else it tests nothing)."""
    case = torch.load(DATA / "multicrop_tied_locations.pt", weights_only=True)
    a, b = (case["locations"][i].flatten(1, 2) for i in (0, 2))
    best = torch.cdist(a, b).min(dim=-1).values
    sorted_best = best.sort(dim=1).values
    assert bool((sorted_best[:, 1:] == sorted_best[:, :-1]).any())


FIGURES = json.loads((DATA / "official_model_terms.json").read_text())
FLOAT32_CASES = {"convnext_small_2x224+6x96"}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.slow
def test_model_matches_official_end_to_end(case):
    torch.set_num_threads(2)
    args, crops = CASES[case]
    model = build_from_official_args(dict(args, alpha=0.75, num_matches="20,4"))
    model = model.double().train()
    model.load_state_dict(fill_state(model.state_dict()), strict=True)
    views, locations = make_inputs(crops)
    dtype = torch.float32 if case in FLOAT32_CASES else torch.float64
    model = model.to(dtype)
    views, locations = [v.to(dtype) for v in views], [g.to(dtype) for g in locations]
    with torch.no_grad():
        outputs = model.forward_views(views)
        rep_sum = float(torch.stack(outputs["representation"]).double().sum())
        rel = 1e-9 if dtype == torch.float64 else FLOAT32_RTOL
        assert rep_sum == pytest.approx(FIGURES[case]["representation_sum"], rel=rel)
        for l2 in (1, 0):
            model.l2_all_matches = bool(l2)
            terms = model.criterion(outputs, locations)
            assert_terms_close(terms, FIGURES[case][f"l2_all_matches={l2}"], f"{case} l2={l2}",
                               RTOL if dtype == torch.float64 else FLOAT32_RTOL)


def test_loss_terms_api_and_gradients():
    """``loss_terms`` returns the six documented keys and the loss back-propagates."""
    model = build_from_official_args(dict(arch="convnext_mini", mlp="64-64-64", maps_mlp="32-32-32",
                                          num_classes=5))
    views, locations = make_inputs([(64, 2), (64, 2), (32, 1)], batch=4)
    views = [v.float().requires_grad_(False) for v in views]
    locations = [g.float() for g in locations]
    terms = model.loss_terms(views, locations)
    assert set(terms) == set(LOSS_KEYS)
    torch.manual_seed(0)  # the same drop-path draws in both passes
    loss, logs = model(views, locations, labels=torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    assert "probe_ce" in logs
    grads = [p.grad.clone() for p in model.backbone.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    assert model.classifier.weight.grad is not None  # the probe learns ...
    # ... but does not reach the backbone: its input is detached (official behaviour), so the
    # backbone's gradients are those of the criterion alone
    model.zero_grad()
    torch.manual_seed(0)
    criterion_only, _ = model(views, locations)
    criterion_only.backward()
    for with_probe, p in zip(grads, model.backbone.parameters()):
        torch.testing.assert_close(p.grad, with_probe, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("alpha, present", [(1.0, "global_"), (0.0, "local_")])
def test_alpha_extremes_build_only_the_needed_head(alpha, present):
    model = build_from_official_args(dict(arch="convnext_mini", mlp="64-64-64",
                                          maps_mlp="32-32-32", alpha=alpha))
    views, locations = make_inputs([(64, 2), (64, 2)], batch=4)
    terms = model.loss_terms([v.float() for v in views], [g.float() for g in locations])
    assert all(k.startswith(present) for k in terms) and len(terms) == 3
    assert hasattr(model, "projector") == (alpha > 0)
    assert hasattr(model, "maps_projector") == (alpha < 1)
