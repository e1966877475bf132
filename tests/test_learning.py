"""Our pretraining learns: a short pretraining of the demo recipe
(configs/pretrain/vicregl_resnet_nano_2x64+2x32_25e_synthetic_cpu.yaml: VICRegL, resnet_nano,
in-memory batched crops) must beat random init on k-NN classification and on dense
nearest-neighbour retrieval by a margin, so that a change that stops learning (a wrong
augmentation, a sign error, a dead optimiser group, a disabled loss term) fails CI.

How the margins were derived (tests/learning_check.py, 2-core machine, one thread; numbers in
docs/suites.md, "Does the pretraining learn?"): over 3 pretraining seeds and 3 random-init
seeds, each scored after recomputing its BatchNorm statistics on the same clean scenes, the
gap between pretrained and random init was measured with its seed spread; a margin is twice
the largest seed std measured on either side (the demo's rule), rounded up, and stays well
below the measured gap. With the invariance term disabled (``loss.inv_coeff=0``) the same
check fails (measured; docs/suites.md).
"""
import pytest
import torch

from learning_check import make_world, pretrain, random_backbone, score

# (steps, k-NN margin, dense-retrieval margin), percentage points; see the module docstring
FAST = (100, 6.0, 4.5)
FULL = (200, 9.0, 7.5)


@pytest.fixture(scope="module")
def world():
    return make_world()


@pytest.fixture(scope="module")
def floor(world):
    return score(random_backbone(0), world)


def check_learns(tmp_path, world, floor, steps, knn_margin, dense_margin):
    torch.set_num_threads(1)
    learnt = score(pretrain(tmp_path / "run", steps, seed=0), world)
    assert learnt["knn"] - floor["knn"] > knn_margin, (learnt, floor)
    assert learnt["dense"] - floor["dense"] > dense_margin, (learnt, floor)


def test_a_short_pretraining_beats_random_init(tmp_path, world, floor):
    check_learns(tmp_path, world, floor, *FAST)


@pytest.mark.slow
def test_pretraining_beats_random_init_by_a_wide_margin(tmp_path, world, floor):
    check_learns(tmp_path, world, floor, *FULL)
