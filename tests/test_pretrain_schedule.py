"""A whole run takes the official steps (issue 18): steps per epoch with the partial last batch,
the schedule's length and warm-up from the dataset size, the learning rate held at its end
value after the schedule, and the optimiser's official weight decay.

The expected figures are worked out by hand from the official code (main_vicregl.py,
datasets.py, utils.learning_schedule at commit 803ae4c) for ImageNet-1k's 1,281,167 training
images; the code under test is what the engine runs (``run_schedule``, the sampler).
"""
import math
from pathlib import Path

import pytest
import torch

from pretrain.checkpoint import read_resume_checkpoint
from pretrain.config import ConfigValueError, check_pretrain_config, load_config
from pretrain.optim import build_optimizer, learning_rate, run_schedule
from pretrain.sampler import ResumableDistributedSampler, epoch_steps
from pretrain.weight_files import TRAIN_FORMAT

ROOT = Path(__file__).resolve().parent.parent
IMAGENET = 1_281_167

# recipe, processes (its README launch line), then by hand, with b = batch / processes:
# steps/epoch = ceil(ceil(N / processes) / b), schedule = epochs * N // batch,
# warm-up = 10 * N // batch, peak = base_lr * batch / 256.
RECIPES = {
    # ceil(N / 8) = 160,146 images per process = 2,502 x 64 + 18
    "vicregl_resnet50_2x224_100e_in1k": dict(
        world=8, per_epoch=2503, last=18, schedule=250_227, warmup=25_022, peak=0.6),
    # ceil(N / 32) = 40,037 = 625 x 64 + 37
    "vicregl_resnet50_2x224_300e_in1k": dict(
        world=32, per_epoch=626, last=37, schedule=187_670, warmup=6_255, peak=1.6),
    # 160,146 = 3,336 x 48 + 18
    "vicregl_convnext_small_2x224+6x96_100e_in1k": dict(
        world=8, per_epoch=3337, last=18, schedule=333_637, warmup=33_363, peak=0.001125),
    # ceil(N / 16) = 80,073 = 2,224 x 36 + 9
    "vicregl_convnext_small_2x224+6x96_400e_in1k": dict(
        world=16, per_epoch=2225, last=9, schedule=889_699, warmup=22_242, peak=0.001125),
}


def recipe(name: str, *overrides: str) -> dict:
    return load_config(ROOT / "configs/pretrain" / f"{name}.yaml", list(overrides))


@pytest.mark.parametrize("name", list(RECIPES))
def test_imagenet_recipes_take_the_official_steps(name):
    want = RECIPES[name]
    cfg = recipe(name)
    s = run_schedule(cfg["optim"], IMAGENET, want["world"])
    assert (s.steps_per_epoch, s.total_steps, s.warmup_steps) == (
        want["per_epoch"], want["schedule"], want["warmup"])
    epochs = cfg["optim"]["epochs"]
    assert s.run_steps == epochs * want["per_epoch"] > s.total_steps  # the run outlasts it

    per_rank = cfg["optim"]["batch_size"] // want["world"]
    sampler = ResumableDistributedSampler(IMAGENET, per_rank, rank=want["world"] - 1,
                                          world_size=want["world"])
    assert sampler.batches_per_epoch == want["per_epoch"]
    assert sampler.last_batch_size == want["last"]
    sampler.set_epoch(3, start_batch=want["per_epoch"] - 1)  # the epoch's last batch only
    assert len(list(sampler)) == len(sampler) == want["last"]

    peak, end = want["peak"], want["peak"] * 0.001
    assert s.learning_rate(0) == 0.0
    assert s.learning_rate(1) == pytest.approx(peak / want["warmup"], rel=1e-12)
    assert s.learning_rate(want["warmup"]) == pytest.approx(peak, rel=1e-12)
    mid = want["warmup"] + 1000  # 1,000 steps into the cosine
    assert s.learning_rate(mid) == pytest.approx(end + (peak - end) * 0.5 * (
        1 + math.cos(math.pi * 1000 / (want["schedule"] - want["warmup"]))), rel=1e-12)
    for step in (want["schedule"], want["schedule"] + 1, s.run_steps - 1):  # held at its end
        assert s.learning_rate(step) == pytest.approx(end, rel=1e-12)


def test_the_resnet50_recipe_against_the_former_arithmetic():
    """The issue's figures: 2,503 vs 2,502 steps per epoch, the learning rate 8e-5 relative
    off in the warm-up and ~5.8e-3 near the schedule's end, 100 steps more in all."""
    optim = recipe("vicregl_resnet50_2x224_100e_in1k")["optim"]
    new, old = run_schedule(optim, IMAGENET, 8), run_schedule(optim, IMAGENET, 8, True)
    assert (old.steps_per_epoch, old.total_steps, old.warmup_steps) == (2502, 250_200, 25_020)
    assert new.run_steps - old.run_steps == 100
    assert new.learning_rate(100) / old.learning_rate(100) == pytest.approx(25_020 / 25_022)
    near_end = 245_765  # where the two differ most
    assert new.learning_rate(near_end) / old.learning_rate(near_end) - 1 == pytest.approx(
        5.86e-3, abs=1e-5)


def test_learning_rate_is_the_official_float():
    """utils.learning_schedule's operations in its order: equal floats, not just close."""
    def official(step, batch, base, ratio, total, warm):
        scaled = base * batch / 256.0
        end = scaled * ratio
        if step < warm:
            return step / warm * scaled if warm > 0 else scaled
        g, m = min(step - warm, total - warm), total - warm
        return (scaled - end) * (0.5 * (1 + math.cos(math.pi * g / m))) + end

    for step in (0, 7, 25_021, 25_022, 25_023, 99_999, 137_624, 250_226, 250_227, 250_299):
        assert learning_rate(step, base_lr=0.3, batch_size=512, total_steps=250_227,
                             warmup_steps=25_022, end_lr_ratio=0.001) == \
            official(step, 512, 0.3, 0.001, 250_227, 25_022)


def test_the_sampler_pads_and_keeps_the_partial_batch_as_distributed_sampler():
    """13 images over 3 processes, 3 per batch: padded to 15 with the permutation's head
    (as DistributedSampler), rank r takes every third from r: 5 each, batches of 3 and 2."""
    seen = []
    for rank in range(3):
        sampler = ResumableDistributedSampler(13, 3, rank=rank, world_size=3, seed=1)
        sampler.set_epoch(2)
        mine = list(sampler)
        assert len(mine) == len(sampler) == 5
        assert (sampler.batches_per_epoch, sampler.last_batch_size) == (2, 2)
        seen.append(mine)
    order = torch.randperm(13, generator=torch.Generator().manual_seed(1 * 1_000_003 + 2))
    padded = [2 * 13 + i for i in order.tolist() + order[:2].tolist()]  # epoch 2's indices
    assert seen == [padded[r::3] for r in range(3)]
    assert epoch_steps(13, 3, world_size=3) == 2
    assert epoch_steps(13, 3, world_size=3, drop_last=True) == 1


@pytest.mark.parametrize("size, world, batch", [(13, 3, 3), (40, 4, 4), (23, 2, 4)])
def test_seed_0_gives_the_official_loaders_batches(size, world, batch):
    """run.seed 0: the official DistributedSampler's order (its seed 0 + epoch), padding and
    shards, batched as its DataLoader without drop_last, for every rank and a few epochs."""
    from torch.utils.data import DataLoader, DistributedSampler

    for rank in range(world):
        ours = ResumableDistributedSampler(size, batch, rank=rank, world_size=world, seed=0)
        official = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=True)
        for epoch in range(3):
            ours.set_epoch(epoch)
            official.set_epoch(epoch)
            expected = [b.tolist() for b in DataLoader(range(size), batch, sampler=official)]
            got = [[i - epoch * size for i in b.tolist()] for b in DataLoader(
                range(size * 3), batch, sampler=ours)]
            assert got == expected and len(got) == ours.batches_per_epoch


def test_a_start_batch_resumes_the_same_indices():
    full = ResumableDistributedSampler(23, 4, rank=1, world_size=2, seed=3)
    full.set_epoch(1)
    everything = list(full)  # ceil(23 / 2) = 12 = 3 x 4: the tail padded with the head
    assert len(everything) == 12
    for start in range(4):
        full.set_epoch(1, start_batch=start)
        assert list(full) == everything[start * 4:] and len(full) == 12 - 4 * start


def test_drop_last_keeps_the_former_order():
    sampler = ResumableDistributedSampler(23, 4, rank=1, world_size=2, seed=3, drop_last=True)
    order = torch.randperm(23, generator=torch.Generator().manual_seed(3 * 1_000_003))
    assert list(sampler) == order[:16][1::2].tolist() and sampler.batches_per_epoch == 2


def test_a_last_batch_of_one_image_is_refused():
    with pytest.raises(ValueError, match="last batch of 1 image per process.*data.drop_last"):
        ResumableDistributedSampler(17, 4)
    ResumableDistributedSampler(17, 4, drop_last=True)
    ResumableDistributedSampler(17, 1)  # one image per batch throughout: the user's choice


def test_the_default_weight_decay_follows_the_optimiser():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    lars, adamw = (build_optimizer(model, name) for name in ("lars", "adamw"))
    assert lars.param_groups[0]["weight_decay"] == 1e-6
    assert adamw.param_groups[1]["weight_decay"] == 0.05
    assert build_optimizer(model, "lars", 0.01).param_groups[0]["weight_decay"] == 0.01
    smoke = "vicregl_convnext_mini_2x96+2x64_cpu_smoke"
    cfg = recipe(smoke, "optim.optimizer=lars", "optim.weight_decay=null")
    check_pretrain_config(cfg)
    assert cfg["optim"]["weight_decay"] is None
    for name in RECIPES:  # the ImageNet recipes leave it to the optimiser
        assert recipe(name)["optim"]["weight_decay"] is None


def test_a_quoted_weight_decay_is_refused():
    cfg = recipe("vicregl_convnext_mini_2x96+2x64_cpu_smoke", "optim.weight_decay='5e-4'")
    with pytest.raises(ConfigValueError, match=r"optim.weight_decay = '5e-4': expected a "
                                               r"finite number >= 0.0 \(write 5.0e-4"):
        check_pretrain_config(cfg)


@pytest.mark.parametrize("saved, drop_last, refused", [
    ({"seed": 0}, False, "written before data.drop_last existed.*data.drop_last=true"),
    ({"seed": 0}, True, None),
    ({"drop_last": True}, False, "trained with data.drop_last=true but the config says false"),
    ({"drop_last": False}, True, "trained with data.drop_last=false but the config says true"),
    ({"drop_last": False}, False, None),
])
def test_resume_refuses_another_drop_last(tmp_path, saved, drop_last, refused):
    cfg = recipe("vicregl_convnext_mini_2x96+2x64_cpu_smoke", f"data.drop_last={drop_last}")
    path = tmp_path / "checkpoint.pth"
    torch.save({"format": TRAIN_FORMAT, "arch": cfg["model"]["arch"], "model": {},
                "optimizer": {}, "scaler": {}, "step": 5, "rng": [], "sampler": saved}, path)
    if refused is None:
        assert read_resume_checkpoint(path, cfg)["step"] == 5
    else:
        with pytest.raises(ValueError, match=refused):
            read_resume_checkpoint(path, cfg)
